package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/restartcoord/restartcoord/schema"
)

const clientsUsage = "restartcoord clients NODE [--json] [-s URL] [--timeout DURATION]"

// runClients lists a node's client sessions with their buffer depth and
// last activity.
func runClients(ctx context.Context, args []string) error {
	o := newOpsFlags("clients", clientsUsage)
	return queryNode(ctx, o, args, clientsUsage, schema.OpClients, within(defaultQueryWait), emptyBody,
		func(node string, data []byte, asJSON bool) error {
			var l schema.ClientList
			if err := decodeReply(node, schema.OpClients, data, &l); err != nil {
				return err
			}
			if asJSON {
				return printRaw(data)
			}
			renderClients(opsOut, &l)
			return nil
		})
}

func renderClients(w io.Writer, l *schema.ClientList) {
	fmt.Fprintf(w, "%s: %d client session(s), %d request(s) buffered (buffer %d per client)\n",
		l.NodeID, len(l.Clients), l.TotalBuffered, l.BufferLimit)
	if l.MeasuredAt != nil {
		fmt.Fprintf(w, "  (sessions as of %s: the worker is being replaced)\n", fmtTimePtr(l.MeasuredAt))
	}
	if len(l.Clients) == 0 {
		return
	}
	rows := make([][]string, 0, len(l.Clients))
	for _, c := range l.Clients {
		buffered := strconv.Itoa(c.Buffered)
		if l.BufferLimit > 0 && c.Buffered*10 >= l.BufferLimit*8 {
			buffered += " (80%+)"
		}
		rows = append(rows, []string{c.ClientID, buffered, fmtTime(c.LastActivity), fmtTime(c.ConnectedAt),
			strconv.FormatInt(c.Requests, 10), strconv.Itoa(c.Reconnects)})
	}
	table(w, "  ", []string{"client", "buffered", "last activity", "connected", "requests", "reconnects"}, rows)
}
