package node_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/schema"
)

// Every endpoint answers bad input with the error envelope and changes
// nothing: same worker, same history, no restart started.
func TestBadInputGetsEnvelopeAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	before := e.health("n1")
	cases := []struct {
		op, body, field string
		code            schema.Code
		hdr             nats.Header
	}{
		{schema.OpRestart, `{"timeout":5}`, "timeout", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"timeout":301}`, "timeout", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"reason":"because"}`, "reason", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"gracefull":false}`, "gracefull", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"graceful":"no"}`, "graceful", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"graceful":null}`, "graceful", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"restart_id":"has space"}`, "restart_id", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `[1,2]`, "", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{"graceful":false`, "", schema.CodeInvalidParameters, nil},
		{schema.OpRestart, `{}`, schema.HeaderFencingToken, schema.CodeInvalidParameters, nats.Header{schema.HeaderFencingToken: []string{"soon"}}},
		{schema.OpHealth, `{"include_everything":true}`, "include_everything", schema.CodeInvalidParameters, nil},
		{schema.OpHealth, `{"include_database_status":1}`, "include_database_status", schema.CodeInvalidParameters, nil},
		{schema.OpPrepare, `{"check_active_tasks":"yes"}`, "check_active_tasks", schema.CodeInvalidParameters, nil},
		{schema.OpPrepare, `"ready?"`, "", schema.CodeInvalidParameters, nil},
		{schema.OpRestartStatus, `{"include_history":"true"}`, "include_history", schema.CodeInvalidParameters, nil},
		{schema.OpRestartStatus, `{"limit":0}`, "limit", schema.CodeInvalidParameters, nil},
		{schema.OpReconnectTest, `{"session_id":"a.b"}`, "session_id", schema.CodeInvalidParameters, nil},
		{schema.OpReconnectTest, `{"include_buffer_status":null}`, "include_buffer_status", schema.CodeInvalidParameters, nil},
		{schema.OpStateBackup, `{"now":true}`, "now", schema.CodeInvalidParameters, nil},
		{schema.OpStateBackups, `{"all":true}`, "all", schema.CodeInvalidParameters, nil},
		{schema.OpStateRestore, `{"backup":"1"}`, "confirm", schema.CodeInvalidParameters, nil},
		{schema.OpStateRestore, `{"confirm":true}`, "backup", schema.CodeInvalidParameters, nil},
		{schema.OpStateRestore, `{"backup":"99","confirm":true}`, "backup", schema.CodeNotFound, nil},
		{schema.OpReply, `{}`, "request_id", schema.CodeInvalidParameters, nil},
	}
	for _, c := range cases {
		t.Run(c.op+" "+c.body, func(t *testing.T) {
			msg := &nats.Msg{Subject: schema.NodeSubject("n1", c.op), Data: []byte(c.body), Header: c.hdr}
			m, err := e.conn.RequestMsg(msg, 10e9)
			if err != nil {
				t.Fatal(err)
			}
			env, ok := schema.ParseEnvelope(m.Data)
			if !ok {
				t.Fatalf("reply is not the error envelope: %s", m.Data)
			}
			if env.Code != c.code || env.Field() != c.field {
				t.Fatalf("got %s field %q (%s), want %s field %q", env.Code, env.Field(), env.Message, c.code, c.field)
			}
			if got, want := m.Header.Get("Nats-Service-Error-Code"), itoa(c.code.Status()); got != want {
				t.Fatalf("Nats-Service-Error-Code %q, want %q", got, want)
			}
			if m.Header.Get("Nats-Service-Error") == "" {
				t.Fatal("no Nats-Service-Error header")
			}
		})
	}
	after := e.health("n1")
	if after.WorkerPID != before.WorkerPID || !after.Healthy {
		t.Fatalf("worker %d -> %d (healthy %v): bad input changed something", before.WorkerPID, after.WorkerPID, after.Healthy)
	}
	if n := e.history("n1").TotalRestarts; n != 0 {
		t.Fatalf("history has %d restarts after only bad requests", n)
	}
	var list schema.BackupList
	if err := e.req("n1", schema.OpStateBackups, nil, &list); err != nil || len(list.Backups) != 0 {
		t.Fatalf("backups %+v (%v): bad input made a snapshot", list.Backups, err)
	}
}

func TestFencingTokenOlderThanSeenIsRefused(t *testing.T) {
	e := newEnv(t)
	e.startNode(e.fastConfig("n1"))
	var r schema.RestartResult
	if err := e.reqHdr("n1", schema.OpRestart, map[string]any{}, nats.Header{schema.HeaderFencingToken: []string{"7"}}, &r); err != nil || !r.Success {
		t.Fatalf("restart with token 7: %+v %v", r, err)
	}
	err := e.reqHdr("n1", schema.OpRestart, map[string]any{}, nats.Header{schema.HeaderFencingToken: []string{"6"}}, &r)
	mustCode(t, err, schema.CodeStaleFencingToken)
	// An operator (no token) is still served.
	if r := e.restart("n1", map[string]any{}); !r.Success {
		t.Fatalf("operator restart: %+v", r)
	}
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
