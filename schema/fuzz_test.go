package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// Fuzz targets for every decoder of outside input. Seeds live in code (f.Add)
// and in testdata/fuzz/<FuzzName>/. Run one with
//
//	go test ./schema -run XXX -fuzz '^FuzzDecodeRestartRequest$' -fuzztime 10s

// commonSeeds are bodies every request decoder should see.
var commonSeeds = []string{
	``, ` `, `{}`, `null`, `[]`, `"x"`, `0`, `{`, `{}}`, `{} {}`, `{"a":1}`, `{"a":null}`,
	"{\"\xff\":1}", `{"a":{"b":[1,{"c":null}]}}`, `{"a":1e400}`,
}

func addSeeds(f *testing.F, seeds ...string) {
	for _, s := range append(commonSeeds, seeds...) {
		f.Add([]byte(s))
	}
}

// requireCode fails unless err is a contract *Error with code.
func requireCode(t *testing.T, err error, code schema.Code) *schema.Error {
	t.Helper()
	var e *schema.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %T %v, want a *schema.Error", err, err)
	}
	if e.Code != code {
		t.Fatalf("got code %s (%v), want %s", e.Code, err, code)
	}
	if e.Message == "" {
		t.Fatalf("got an empty message, want one")
	}
	return e
}

// checkDecode is the property of a request decoder: it never panics; a
// failure is INVALID_PARAMETERS (400); a success passes Validate and
// survives a marshal/decode round trip unchanged.
func checkDecode[T any, P interface {
	*T
	schema.Validator
}](t *testing.T, data []byte, def func() T) {
	v := def()
	if err := schema.Decode(data, P(&v)); err != nil {
		if e := requireCode(t, err, schema.CodeInvalidParameters); e.Code.Status() != 400 {
			t.Fatalf("got status %d, want 400", e.Code.Status())
		}
		return
	}
	if err := P(&v).Validate(); err != nil {
		t.Fatalf("decoded %+v from %q, but Validate says %v", v, data, err)
	}
	enc, err := json.Marshal(&v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	w := def()
	if err := schema.Decode(enc, P(&w)); err != nil {
		t.Fatalf("re-decoding %s: %v", enc, err)
	}
	if !reflect.DeepEqual(v, w) {
		t.Fatalf("round trip: got %+v, want %+v", w, v)
	}
}

func FuzzDecodeRestartRequest(f *testing.F) {
	addSeeds(f, `{"graceful":false}`, `{"timeout":5}`, `{"timeout":300.5}`, `{"reason":"dr_test","restart_id":"r-1"}`,
		`{"gracefull":true}`, `{"graceful":"yes"}`, `{"restart_id":"a.b"}`, `{"GRACEFUL":false,"Timeout":10}`,
		`{"graceful":true,"preserve_state":false,"timeout":60,"reason":"schema_migration","restart_id":"x_1"}`)
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data, schema.DefaultRestartRequest) })
}

func FuzzDecodeHealthRequest(f *testing.F) {
	addSeeds(f, `{"include_reboot_readiness":false}`, `{"include_database_status":"no"}`,
		`{"include_reboot_readiness":true,"include_connection_status":false,"include_database_status":true}`)
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data, schema.DefaultHealthRequest) })
}

func FuzzDecodePrepareRequest(f *testing.F) {
	addSeeds(f, `{"check_active_tasks":false}`, `{"check_database_state":0}`,
		`{"check_active_tasks":true,"check_database_state":true,"check_client_connections":false}`)
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data, schema.DefaultPrepareRequest) })
}

func FuzzDecodeStatusRequest(f *testing.F) {
	addSeeds(f, `{"include_history":true}`, `{"limit":0}`, `{"limit":1000}`, `{"limit":10.5}`,
		`{"include_history":true,"include_error_details":false,"limit":3}`)
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data, schema.DefaultStatusRequest) })
}

func FuzzDecodeReconnectTestRequest(f *testing.F) {
	addSeeds(f, `{"session_id":"c1"}`, `{"session_id":"c 1"}`, `{"session_id":">"}`,
		`{"session_id":"c1","include_buffer_status":false,"include_reconnection_stats":false}`)
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data, schema.DefaultReconnectTestRequest) })
}

func FuzzDecodeRestoreRequest(f *testing.F) {
	addSeeds(f, `{"backup":"1","confirm":true}`, `{"backup":"1"}`, `{"backup":"snap-1","confirm":true,"timeout":5}`)
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data, schema.DefaultRestoreRequest) })
}

func FuzzDecodeReplyRequest(f *testing.F) {
	addSeeds(f, `{"request_id":"req-1"}`, `{"request_id":""}`, `{"request_id":"\u00e9<>&"}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data, func() schema.ReplyRequest { return schema.ReplyRequest{} })
	})
}

// FuzzDecodeTaskRequest decodes a client request body like the worker does:
// the TaskRequest, then its op's args under the prefix "args".
func FuzzDecodeTaskRequest(f *testing.F) {
	addSeeds(f,
		`{"op":"task.create","args":{"title":"Resize images","job":{"kind":"steps","steps":50,"step_seconds":0.1}}}`,
		`{"op":"task.create","args":{"title":"x","job":{"kind":"steps","steps":0}}}`,
		`{"op":"task.create","args":{"title":"x","job":{"kind":"steps","steps":1,"stepz":1}}}`,
		`{"op":"task.get","args":{"task_id":"t1"}}`, `{"op":"task.get","args":"t1"}`,
		`{"op":"task.list"}`, `{"op":"task.list","args":{"status":"active","after":"t-5","limit":2}}`,
		`{"op":"task.update","args":{"task_id":"t1","progress":50,"checkpoint":{"step":25}}}`,
		`{"op":"task.update","args":{"task_id":"t1","checkpoint": { "a" : [ 1 , null ] } }}`,
		`{"op":"task.complete","args":{"task_id":"t1","result":{"ok":true}}}`,
		`{"op":"task.fail","args":{"task_id":"t1","error":"boom"}}`, `{"op":"task.delete"}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req schema.TaskRequest
		if err := schema.Decode(data, &req); err != nil {
			requireCode(t, err, schema.CodeInvalidParameters)
			return
		}
		args := argsFor(req.Op)
		if args == nil {
			t.Fatalf("decoded unknown op %q", req.Op)
		}
		if err := schema.DecodeArgs(req.Args, args, "args"); err != nil {
			e := requireCode(t, err, schema.CodeInvalidParameters)
			if f := e.Field(); f != "args" && !strings.HasPrefix(f, "args.") {
				t.Fatalf("got field %q for an args error, want args or args.*", f)
			}
			return
		}
		if err := args.Validate(); err != nil {
			t.Fatalf("decoded args %+v, but Validate says %v", args, err)
		}
		enc, err := json.Marshal(args)
		if err != nil {
			t.Fatalf("marshal %+v: %v", args, err)
		}
		again := argsFor(req.Op)
		if err := schema.DecodeArgs(enc, again, "args"); err != nil {
			t.Fatalf("re-decoding args %s: %v", enc, err)
		}
	})
}

// smallState is a state for fuzz seeds: fuzzing minimizes every new
// interesting input byte by byte, so seeds are kept short.
func smallState() *schema.State {
	return &schema.State{
		Tasks: []schema.Task{{TaskID: "t1", Title: "Resize", Status: schema.TaskActive, Progress: 42,
			Job: &schema.Job{Kind: schema.JobKindSteps, Steps: 5, StepSeconds: 0.1}, StepsDone: 2,
			CreatedAt: t0, UpdatedAt: t0.Add(1500 * time.Millisecond)}},
		Sessions: []schema.Session{{SessionID: "c1", ClientID: "c1", ConnectedAt: t0, LastActivity: t0}},
		Replies:  []schema.KeptReply{{RequestID: "r1", ClientID: "c1", Reply: json.RawMessage(`{"ok":true}`), At: t0}},
	}
}

// FuzzUnmarshalSnapshot feeds stored bytes to the snapshot reader: never a
// panic, every refusal STATE_CORRUPTION, and an accepted snapshot verifies,
// has a supported version, and its State() either works or is
// STATE_CORRUPTION.
func FuzzUnmarshalSnapshot(f *testing.F) {
	for _, v := range []int{1, 2} {
		s, err := schema.NewSnapshot("node-1", "snap-1", "restart", t0, 42, smallState(), v)
		if err != nil {
			f.Fatal(err)
		}
		data, _ := s.Marshal()
		f.Add(data)
		f.Add(bytes.Replace(data, []byte("Resize"), []byte("Resizz"), 1))
	}
	addSeeds(f, `{"schema_version":3}`, `{"schema_version":2,"payload":{}}`, `{"taken_at":"x"}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := schema.UnmarshalSnapshot(data)
		if err != nil {
			requireCode(t, err, schema.CodeStateCorruption)
			if s != nil {
				t.Fatalf("got a snapshot with error %v", err)
			}
			return
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("accepted snapshot does not verify: %v", err)
		}
		if s.SchemaVersion < schema.MinSchemaVersion || s.SchemaVersion > schema.CurrentSchemaVersion {
			t.Fatalf("accepted schema version %d", s.SchemaVersion)
		}
		checkState(t, s)
	})
}

// FuzzSnapshotState seals any payload correctly (so the checksum passes) and
// reads it back: this reaches State() and the migrations with arbitrary
// payloads.
func FuzzSnapshotState(f *testing.F) {
	p2, _ := schema.EncodeState(smallState(), 2)
	p1, _ := schema.EncodeState(smallState(), 1)
	f.Add([]byte(p2), 2)
	f.Add([]byte(p1), 1)
	f.Add([]byte(`{"tasks":[{"id":"t1","state":"stopped"}]}`), 1)
	f.Add([]byte(`{"tasks":[{"id":"t1","state":"done","progress":1e307,"created_ms":-9223372036854775808}]}`), 1)
	f.Add([]byte(`{"tasks":[{"task_id":"t1","created_at":"2024-01-01T00:00:00+02:00"}]}`), 2)
	f.Add([]byte(`{}`), 3)
	f.Add([]byte(`null`), 2)
	f.Fuzz(func(t *testing.T, payload []byte, version int) {
		canon, err := json.Marshal(json.RawMessage(payload))
		if err != nil {
			return // not JSON: a snapshot cannot even be written with it
		}
		s := &schema.Snapshot{SchemaVersion: version, NodeID: "node-1", SnapshotID: "snap-f", TakenAt: t0,
			JournalSeq: 1, Trigger: "manual", Payload: canon}
		s.Checksum = s.ComputeChecksum()
		data, err := s.Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		got, err := schema.UnmarshalSnapshot(data)
		if version < schema.MinSchemaVersion || version > schema.CurrentSchemaVersion {
			requireCode(t, err, schema.CodeStateCorruption)
			return
		}
		if err != nil {
			t.Fatalf("a correctly sealed v%d snapshot was refused: %v", version, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("got %+v, want %+v", got, s)
		}
		checkState(t, got)
	})
}

// checkState reads the state of an accepted snapshot: State() either fails
// with STATE_CORRUPTION or gives a state that encodes, re-seals and reads
// back to the same payload.
func checkState(t *testing.T, s *schema.Snapshot) {
	t.Helper()
	st, from, err := s.State()
	if from != s.SchemaVersion {
		t.Fatalf("got from %d, want %d", from, s.SchemaVersion)
	}
	if err != nil {
		requireCode(t, err, schema.CodeStateCorruption)
		return
	}
	p1, err := schema.EncodeState(st, schema.CurrentSchemaVersion)
	if err != nil {
		t.Fatalf("a loaded state does not encode: %v", err)
	}
	s2, err := schema.NewSnapshot(s.NodeID, s.SnapshotID, s.Trigger, time.Unix(0, 0), 1, st, schema.CurrentSchemaVersion)
	if err != nil {
		t.Fatalf("a loaded state does not snapshot: %v", err)
	}
	data, _ := s2.Marshal()
	s3, err := schema.UnmarshalSnapshot(data)
	if err != nil {
		t.Fatalf("a re-sealed snapshot was refused: %v", err)
	}
	st3, _, err := s3.State()
	if err != nil {
		t.Fatalf("a re-sealed state does not load: %v", err)
	}
	p3, _ := schema.EncodeState(st3, schema.CurrentSchemaVersion)
	if !bytes.Equal(p1, p3) && !hasDuplicateKeys(st) {
		t.Fatalf("state changed across re-seal:\n%s\n%s", p1, p3)
	}
}

// hasDuplicateKeys reports whether the canonical order of st is ambiguous
// (two tasks with one id, ...), where a second sort may reorder equals.
func hasDuplicateKeys(st *schema.State) bool {
	seen := map[string]bool{}
	for _, tk := range st.Tasks {
		if seen["t"+tk.TaskID] {
			return true
		}
		seen["t"+tk.TaskID] = true
	}
	for _, s := range st.Sessions {
		if seen["s"+s.SessionID] {
			return true
		}
		seen["s"+s.SessionID] = true
	}
	for _, r := range st.Replies {
		k := "r" + r.At.UTC().Format(time.RFC3339Nano) + " " + r.RequestID
		if seen[k] {
			return true
		}
		seen[k] = true
	}
	return false
}

// FuzzParseEnvelope: never a panic; an accepted envelope has an error that
// re-encodes to an envelope that parses to the same bytes again.
func FuzzParseEnvelope(f *testing.F) {
	for _, e := range []*schema.Error{
		schema.Invalid("timeout", "timeout must be 10..300 seconds, got 5"),
		schema.Errorf(schema.CodeRateLimited, "slow down").WithDetail("retry_after", 1.5),
		schema.Errorf(schema.CodeNotLeader, "ask coord-2").WithDetail("leader", "coord-2"),
	} {
		data, _ := json.Marshal(schema.NewEnvelope(e))
		f.Add(data)
	}
	addSeeds(f, `{"type":"io.restartcoord.v1.error","error":{}}`, `{"type":"io.restartcoord.v1.error","error":null}`,
		`{"type":"io.restartcoord.v1.task_reply","ok":true}`,
		`{"type":"io.restartcoord.v1.error","error":{"code":"X","message":"m","details":{"field":7,"a":[{}]}}}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, ok := schema.ParseEnvelope(data)
		if !ok {
			if e != nil {
				t.Fatalf("got %v with ok false", e)
			}
			return
		}
		if e == nil {
			t.Fatal("got nil error with ok true")
		}
		_ = e.Field()
		_ = e.Code.Status()
		m1, err := json.Marshal(schema.NewEnvelope(e))
		if err != nil {
			t.Fatalf("marshal %#v: %v", e, err)
		}
		e2, ok := schema.ParseEnvelope(m1)
		if !ok {
			t.Fatalf("re-encoded envelope %s does not parse", m1)
		}
		m2, _ := json.Marshal(schema.NewEnvelope(e2))
		if !bytes.Equal(m1, m2) {
			t.Fatalf("envelope changed:\n%s\n%s", m1, m2)
		}
	})
}
