package notify_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

func emailConfig(host string, port int) notify.EmailConfig {
	return notify.EmailConfig{Host: host, Port: port, From: "restartcoord <alerts@example.com>",
		To: []string{"ops@example.com", "Oncall <oncall@example.com>"}, TLS: notify.EmailNoTLS, Timeout: 2 * time.Second}
}

func newEmail(t *testing.T, fake *notifytest.SMTPFake, username, password string) *notify.Email {
	t.Helper()
	cfg := emailConfig(fake.Host(), fake.Port())
	cfg.Username, cfg.Password = username, password
	e, err := notify.NewEmail("mail", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEmailDelivered(t *testing.T) {
	fake := notifytest.NewSMTP(t)
	e := newEmail(t, fake, "", "")
	n := firing(schema.AlertRestartFailed, "node-2")
	if err := e.Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	if err := e.Notify(testCtx(t), resolved(n)); err != nil {
		t.Fatal(err)
	}
	msgs := fake.WaitFor(t, func(m []notifytest.SMTPMessage) bool { return len(m) == 2 }, time.Second)

	m := msgs[0]
	if m.Subject != "[CRITICAL] restart_failed on node-2" {
		t.Errorf("got subject %q", m.Subject)
	}
	if got := msgs[1].Subject; got != "[RESOLVED] restart_failed on node-2" {
		t.Errorf("got resolution subject %q", got)
	}
	if m.From != "alerts@example.com" || strings.Join(m.To, ",") != "ops@example.com,oncall@example.com" {
		t.Errorf("got from %q to %v", m.From, m.To)
	}
	if got, want := m.Header.Get("Message-Id"), "<restartcoord."+n.ID+"@example.com>"; got != want {
		t.Errorf("got Message-ID %q, want %q", got, want)
	}
	for _, want := range []string{"restart of node-2 failed: exit 3", "Severity:      critical", "Node:          node-2",
		"Roll:          roll-7", "Count:         3", "Fingerprint:   restart_failed/node/node-2",
		"First seen:    2026-03-14T09:23:53Z", "Alert ID:      a-1", "exit_code: 3", "attempt: 2/3"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
}

func TestEmailAuth(t *testing.T) {
	fake := notifytest.NewSMTP(t)
	fake.SetCredentials("alerts", "pa55word")
	n := firing(schema.AlertSlowRestart, "node-3")

	if err := newEmail(t, fake, "alerts", "pa55word").Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	if got := fake.Messages()[0].Username; got != "alerts" {
		t.Errorf("got authenticated as %q, want alerts", got)
	}

	err := newEmail(t, fake, "alerts", "WRONGSECRET").Notify(testCtx(t), n)
	wantClass(t, err, 535, false, 0)
	if strings.Contains(err.Error(), "WRONGSECRET") {
		t.Errorf("error %q holds the password", err)
	}

	err = newEmail(t, fake, "", "").Notify(testCtx(t), n)
	wantClass(t, err, 530, false, 0)
}

func TestEmailRefused(t *testing.T) {
	fake := notifytest.NewSMTP(t)
	e := newEmail(t, fake, "", "")
	n := firing(schema.AlertRestartFailed, "node-2")

	fake.FailNext(1, 550)
	wantClass(t, e.Notify(testCtx(t), n), 550, false, 0)

	fake.FailNext(1, 451)
	wantClass(t, e.Notify(testCtx(t), n), 451, true, 0)

	if err := e.Notify(testCtx(t), n); err != nil {
		t.Fatalf("after the refusals: %v", err)
	}
	if got := len(fake.Messages()); got != 1 {
		t.Errorf("got %d messages, want 1", got)
	}
}

func TestEmailConnectionRefused(t *testing.T) {
	host, port, _ := net.SplitHostPort(refusedAddr(t))
	p, _ := strconv.Atoi(port)
	e, err := notify.NewEmail("mail", emailConfig(host, p))
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, e.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2")), 0, true, 0)
}

func TestEmailSTARTTLSRequired(t *testing.T) {
	fake := notifytest.NewSMTP(t) // offers no STARTTLS
	cfg := emailConfig(fake.Host(), fake.Port())
	cfg.TLS = notify.EmailSTARTTLS
	e, err := notify.NewEmail("mail", cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, e.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2")), 0, true, 0)
	if got := len(fake.Messages()); got != 0 {
		t.Errorf("got %d messages sent in the clear, want 0", got)
	}
}

func TestEmailHonoursContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() { // accepts, never greets
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range accepted {
			c.Close()
		}
	})
	addr := ln.Addr().(*net.TCPAddr)
	cfg := emailConfig(addr.IP.String(), addr.Port)
	cfg.Timeout = time.Minute
	e, err := notify.NewEmail("mail", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = e.Notify(ctx, firing(schema.AlertRestartFailed, "node-2"))
	if took := time.Since(start); took > time.Second {
		t.Errorf("Notify took %v after its context ended", took)
	}
	wantClass(t, err, 0, true, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded in its chain", err)
	}
}

func TestEmailMessageIDOfAnyID(t *testing.T) {
	fake := notifytest.NewSMTP(t)
	e := newEmail(t, fake, "", "")
	n := firing(schema.AlertRestartFailed, "node-2")
	n.ID = "group restart_failed/node/node-2 @ 3"
	for range 2 {
		if err := e.Notify(testCtx(t), n); err != nil {
			t.Fatal(err)
		}
	}
	msgs := fake.Messages()
	id0, id1 := msgs[0].Header.Get("Message-Id"), msgs[1].Header.Get("Message-Id")
	if id0 != id1 || !strings.HasPrefix(id0, "<restartcoord.") || strings.ContainsAny(id0, " /") {
		t.Errorf("got Message-IDs %q, %q; want the same valid one", id0, id1)
	}
}

func TestEmailNoCredentialsInTheClear(t *testing.T) {
	fake := notifytest.NewSMTP(t)
	cfg := emailConfig("::ffff:127.0.0.1", fake.Port()) // loopback, but not a name go-mail trusts as localhost
	cfg.Username, cfg.Password = "alerts", "pa55word"
	e, err := notify.NewEmail("mail", cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, e.Notify(testCtx(t), firing(schema.AlertRestartFailed, "node-2")), 0, false, 0)
	if got := len(fake.Messages()); got != 0 {
		t.Errorf("got %d messages, want 0", got)
	}
}
