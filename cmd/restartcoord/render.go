package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Readable output: a title line, then one "key: value" line per fact with
// the values aligned; list items on their own lines below their key.

// facts collects the lines of one block.
type facts struct {
	rows []fact
}

type fact struct {
	key, value string
	item       bool // a list item under the key before it
}

func (f *facts) add(key, format string, args ...any) {
	f.rows = append(f.rows, fact{key: key, value: fmt.Sprintf(format, args...)})
}

// list adds key with the number of items (or none), then each item.
func (f *facts) list(key string, items []string, none string) {
	if len(items) == 0 {
		f.add(key, "%s", none)
		return
	}
	f.add(key, "%d", len(items))
	for _, it := range items {
		f.rows = append(f.rows, fact{value: it, item: true})
	}
}

// write prints the block under indent with aligned values.
func (f *facts) write(w io.Writer, indent string) {
	width := 0
	for _, r := range f.rows {
		if !r.item && len(r.key) > width {
			width = len(r.key)
		}
	}
	for _, r := range f.rows {
		if r.item {
			fmt.Fprintf(w, "%s    - %s\n", indent, r.value)
			continue
		}
		fmt.Fprintf(w, "%s%-*s  %s\n", indent, width+1, r.key+":", r.value)
	}
}

// now is the clock "ago" is measured against (tests fix it).
var now = time.Now

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// fmtTime prints an RFC 3339 UTC time and how long ago it was.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	s := t.UTC().Format(time.RFC3339)
	d := now().Sub(t)
	switch {
	case d > -time.Second && d < time.Second:
		return s + " (just now)"
	case d >= 0:
		return s + " (" + fmtDur(d) + " ago)"
	default:
		return s + " (in " + fmtDur(-d) + ")"
	}
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return fmtTime(*t)
}

// fmtDur prints a duration readably: 0.41s, 12.5s, 3m4s, 2h0m0s.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmtSecs(d.Seconds())
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// fmtSecs prints contract seconds.
func fmtSecs(s float64) string {
	if s >= 60 {
		return fmtDur(time.Duration(s * float64(time.Second)))
	}
	if s >= 10 {
		return fmt.Sprintf("%.1fs", s)
	}
	return fmt.Sprintf("%.2fs", s)
}

// fmtBytes prints a size with a binary unit.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// fmtBytesExact is fmtBytes with the exact count.
func fmtBytesExact(n int64) string {
	if n < 1024 {
		return fmtBytes(n)
	}
	return fmt.Sprintf("%s (%d bytes)", fmtBytes(n), n)
}

// fmtIDs lists ids, at most max of them.
func fmtIDs(ids []string, max int) string {
	if len(ids) == 0 {
		return "0"
	}
	shown := ids
	more := ""
	if len(ids) > max {
		shown, more = ids[:max], fmt.Sprintf(", ... and %d more", len(ids)-max)
	}
	return fmt.Sprintf("%d (%s%s)", len(ids), strings.Join(shown, ", "), more)
}

// orDash prints "-" for an empty string.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// table prints rows under a header with aligned columns.
func table(w io.Writer, indent string, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(widths) && len(c) > widths[i] {
				widths[i] = len(c)
			}
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString(indent)
		for i, c := range cells {
			if i == len(cells)-1 {
				b.WriteString(c)
				break
			}
			fmt.Fprintf(&b, "%-*s  ", widths[i], c)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
}
