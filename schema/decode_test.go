package schema_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

const invalid = schema.CodeInvalidParameters

func TestDefaultRestartRequestMatchesContract(t *testing.T) {
	d := schema.DefaultRestartRequest()
	want := schema.RestartRequest{Graceful: true, PreserveState: true, Timeout: 30, Reason: schema.ReasonManualRequest}
	if d != want {
		t.Fatalf("got %+v, want %+v", d, want)
	}
	if got := d.TimeoutDuration(); got != 30*time.Second {
		t.Errorf("got TimeoutDuration %v, want 30s", got)
	}
}

func TestDecodeRestartRequest(t *testing.T) {
	def := schema.DefaultRestartRequest
	cases := []decodeCase[schema.RestartRequest]{
		{name: "empty body", body: ``, want: ptr(def())},
		{name: "whitespace body", body: " \n\t", want: ptr(def())},
		{name: "empty object", body: `{}`, want: ptr(def())},
		{name: "all fields", body: `{"graceful":false,"preserve_state":false,"timeout":60,"reason":"error_recovery","restart_id":"r-1_x"}`,
			want: &schema.RestartRequest{Graceful: false, PreserveState: false, Timeout: 60,
				Reason: schema.ReasonErrorRecovery, RestartID: "r-1_x"}},
		{name: "emergency only", body: `{"graceful":false}`,
			want: with(def, func(r *schema.RestartRequest) { r.Graceful = false })},
		{name: "timeout 10", body: `{"timeout":10}`, want: with(def, func(r *schema.RestartRequest) { r.Timeout = 10 })},
		{name: "timeout 300", body: `{"timeout":300}`, want: with(def, func(r *schema.RestartRequest) { r.Timeout = 300 })},
		{name: "timeout fraction", body: `{"timeout":12.5}`, want: with(def, func(r *schema.RestartRequest) { r.Timeout = 12.5 })},
		{name: "timeout 5", body: `{"timeout":5}`, code: invalid, field: "timeout"},
		{name: "timeout 9.999", body: `{"timeout":9.999}`, code: invalid, field: "timeout"},
		{name: "timeout 300.5", body: `{"timeout":300.5}`, code: invalid, field: "timeout"},
		{name: "timeout 0", body: `{"timeout":0}`, code: invalid, field: "timeout"},
		{name: "timeout negative", body: `{"timeout":-30}`, code: invalid, field: "timeout"},
		{name: "timeout overflows float64", body: `{"timeout":1e400}`, code: invalid, field: "timeout"},
		{name: "timeout as string", body: `{"timeout":"30"}`, code: invalid, field: "timeout"},
		{name: "timeout null", body: `{"timeout":null}`, code: invalid, field: "timeout"},
		{name: "unknown reason", body: `{"reason":"reboot"}`, code: invalid, field: "reason"},
		{name: "empty reason", body: `{"reason":""}`, code: invalid, field: "reason"},
		{name: "reason upper case", body: `{"reason":"MANUAL_REQUEST"}`, code: invalid, field: "reason"},
		{name: "reason as number", body: `{"reason":1}`, code: invalid, field: "reason"},
		{name: "reason null", body: `{"reason":null}`, code: invalid, field: "reason"},
		{name: "unknown field typo", body: `{"gracefull":true}`, code: invalid, field: "gracefull"},
		{name: "unknown field after valid ones", body: `{"timeout":30,"preserve":true}`, code: invalid, field: "preserve"},
		{name: "graceful as string", body: `{"graceful":"yes"}`, code: invalid, field: "graceful"},
		{name: "graceful as number", body: `{"graceful":1}`, code: invalid, field: "graceful"},
		{name: "preserve_state as object", body: `{"preserve_state":{}}`, code: invalid, field: "preserve_state"},
		{name: "graceful null", body: `{"graceful":null}`, code: invalid, field: "graceful"},
		{name: "graceful null with spaces", body: `{"graceful": null }`, code: invalid, field: "graceful"},
		{name: "restart_id ok", body: `{"restart_id":"abc-DEF_123"}`,
			want: with(def, func(r *schema.RestartRequest) { r.RestartID = "abc-DEF_123" })},
		{name: "restart_id empty means none", body: `{"restart_id":""}`, want: ptr(def())},
		{name: "restart_id 64 chars", body: `{"restart_id":"` + long(64) + `"}`,
			want: with(def, func(r *schema.RestartRequest) { r.RestartID = long(64) })},
		{name: "restart_id 65 chars", body: `{"restart_id":"` + long(65) + `"}`, code: invalid, field: "restart_id"},
		{name: "restart_id with dot", body: `{"restart_id":"a.b"}`, code: invalid, field: "restart_id"},
		{name: "restart_id with space", body: `{"restart_id":"a b"}`, code: invalid, field: "restart_id"},
		{name: "restart_id wildcard", body: `{"restart_id":"*"}`, code: invalid, field: "restart_id"},
		{name: "restart_id as number", body: `{"restart_id":7}`, code: invalid, field: "restart_id"},
		{name: "restart_id null", body: `{"restart_id":null}`, code: invalid, field: "restart_id"},
	}
	cases = append(cases, commonBodyCases[schema.RestartRequest]("")...)
	for _, r := range schema.Reasons {
		cases = append(cases, decodeCase[schema.RestartRequest]{name: "reason " + string(r),
			body: `{"reason":"` + string(r) + `"}`, want: with(def, func(v *schema.RestartRequest) { v.Reason = r })})
	}
	runDecode(t, def, "", cases)
}

func TestDecodeRestartRequestErrorIs400(t *testing.T) {
	for _, body := range []string{`{"timeout":5}`, `{"gracefull":true}`, `[]`, `{`, `{"graceful":null}`} {
		t.Run(body, func(t *testing.T) {
			r := schema.DefaultRestartRequest()
			err := schema.Decode([]byte(body), &r)
			var e *schema.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want a *schema.Error", err)
			}
			if got := e.Code.Status(); got != 400 {
				t.Errorf("got status %d, want 400", got)
			}
			if !errors.Is(err, &schema.Error{Code: schema.CodeInvalidParameters}) {
				t.Errorf("got errors.Is false for INVALID_PARAMETERS, want true")
			}
		})
	}
}

func TestDecodeUnknownReasonListsAllowed(t *testing.T) {
	r := schema.DefaultRestartRequest()
	e := schema.AsError(schema.Decode([]byte(`{"reason":"reboot"}`), &r))
	allowed, ok := e.Details["allowed"].([]schema.Reason)
	if !ok || len(allowed) != len(schema.Reasons) {
		t.Fatalf("got details %v, want allowed = every reason", e.Details)
	}
}

func TestDecodeHealthRequest(t *testing.T) {
	def := schema.DefaultHealthRequest
	if got := def(); got != (schema.HealthRequest{IncludeRebootReadiness: true, IncludeConnectionStatus: true, IncludeDatabaseStatus: true}) {
		t.Fatalf("got default %+v, want all true", got)
	}
	cases := []decodeCase[schema.HealthRequest]{
		{name: "empty body", body: ``, want: ptr(def())},
		{name: "empty object", body: `{}`, want: ptr(def())},
		{name: "no reboot readiness", body: `{"include_reboot_readiness":false}`,
			want: with(def, func(r *schema.HealthRequest) { r.IncludeRebootReadiness = false })},
		{name: "all false", body: `{"include_reboot_readiness":false,"include_connection_status":false,"include_database_status":false}`,
			want: &schema.HealthRequest{}},
		{name: "wrong type", body: `{"include_database_status":"no"}`, code: invalid, field: "include_database_status"},
		{name: "null", body: `{"include_connection_status":null}`, code: invalid, field: "include_connection_status"},
		{name: "typo", body: `{"include_database":false}`, code: invalid, field: "include_database"},
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.HealthRequest]("")...))
}

func TestDecodePrepareRequest(t *testing.T) {
	def := schema.DefaultPrepareRequest
	if got := def(); got != (schema.PrepareRequest{CheckActiveTasks: true, CheckDatabaseState: true, CheckClientConnections: true}) {
		t.Fatalf("got default %+v, want all true", got)
	}
	cases := []decodeCase[schema.PrepareRequest]{
		{name: "empty body", body: ``, want: ptr(def())},
		{name: "empty object", body: `{}`, want: ptr(def())},
		{name: "skip tasks", body: `{"check_active_tasks":false}`,
			want: with(def, func(r *schema.PrepareRequest) { r.CheckActiveTasks = false })},
		{name: "wrong type", body: `{"check_database_state":0}`, code: invalid, field: "check_database_state"},
		{name: "null", body: `{"check_client_connections":null}`, code: invalid, field: "check_client_connections"},
		{name: "typo", body: `{"check_tasks":true}`, code: invalid, field: "check_tasks"},
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.PrepareRequest]("")...))
}

func TestDecodeStatusRequest(t *testing.T) {
	def := schema.DefaultStatusRequest
	if got := def(); got != (schema.StatusRequest{IncludeHistory: false, IncludeErrorDetails: true, Limit: 10}) {
		t.Fatalf("got default %+v, want include_history false, include_error_details true, limit 10", got)
	}
	cases := []decodeCase[schema.StatusRequest]{
		{name: "empty body", body: ``, want: ptr(def())},
		{name: "empty object", body: `{}`, want: ptr(def())},
		{name: "history", body: `{"include_history":true,"include_error_details":false}`,
			want: &schema.StatusRequest{IncludeHistory: true, Limit: 10}},
		{name: "limit 1", body: `{"limit":1}`, want: with(def, func(r *schema.StatusRequest) { r.Limit = 1 })},
		{name: "limit 1000", body: `{"limit":1000}`, want: with(def, func(r *schema.StatusRequest) { r.Limit = 1000 })},
		{name: "limit 0", body: `{"limit":0}`, code: invalid, field: "limit"},
		{name: "limit 1001", body: `{"limit":1001}`, code: invalid, field: "limit"},
		{name: "limit negative", body: `{"limit":-1}`, code: invalid, field: "limit"},
		{name: "limit fraction", body: `{"limit":10.5}`, code: invalid, field: "limit"},
		{name: "limit string", body: `{"limit":"10"}`, code: invalid, field: "limit"},
		{name: "limit null", body: `{"limit":null}`, code: invalid, field: "limit"},
		{name: "history wrong type", body: `{"include_history":"true"}`, code: invalid, field: "include_history"},
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.StatusRequest]("")...))
}

func TestDecodeReconnectTestRequest(t *testing.T) {
	def := schema.DefaultReconnectTestRequest
	if got := def(); got != (schema.ReconnectTestRequest{IncludeBufferStatus: true, IncludeReconnectionStats: true}) {
		t.Fatalf("got default %+v, want no session, both includes true", got)
	}
	cases := []decodeCase[schema.ReconnectTestRequest]{
		{name: "empty body", body: ``, want: ptr(def())},
		{name: "empty object", body: `{}`, want: ptr(def())},
		{name: "session", body: `{"session_id":"c1"}`,
			want: with(def, func(r *schema.ReconnectTestRequest) { r.SessionID = "c1" })},
		{name: "no stats", body: `{"include_reconnection_stats":false,"include_buffer_status":false}`,
			want: &schema.ReconnectTestRequest{}},
		{name: "session with dot", body: `{"session_id":"c.1"}`, code: invalid, field: "session_id"},
		{name: "session with space", body: `{"session_id":"c 1"}`, code: invalid, field: "session_id"},
		{name: "session wildcard", body: `{"session_id":">"}`, code: invalid, field: "session_id"},
		{name: "session 65 chars", body: `{"session_id":"` + long(65) + `"}`, code: invalid, field: "session_id"},
		{name: "session number", body: `{"session_id":1}`, code: invalid, field: "session_id"},
		{name: "session null", body: `{"session_id":null}`, code: invalid, field: "session_id"},
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.ReconnectTestRequest]("")...))
}

func TestDecodeRestoreRequest(t *testing.T) {
	def := schema.DefaultRestoreRequest
	ok := &schema.RestoreRequest{Backup: "1", Confirm: true, Timeout: 30}
	cases := []decodeCase[schema.RestoreRequest]{
		{name: "empty body needs backup", body: ``, code: invalid, field: "backup"},
		{name: "empty object needs backup", body: `{}`, code: invalid, field: "backup"},
		{name: "needs confirm", body: `{"backup":"1"}`, code: invalid, field: "confirm"},
		{name: "confirm false", body: `{"backup":"1","confirm":false}`, code: invalid, field: "confirm"},
		{name: "confirm without backup", body: `{"confirm":true}`, code: invalid, field: "backup"},
		{name: "by index", body: `{"backup":"1","confirm":true}`, want: ok},
		{name: "by snapshot id", body: `{"backup":"snap-20240101","confirm":true,"timeout":60}`,
			want: &schema.RestoreRequest{Backup: "snap-20240101", Confirm: true, Timeout: 60}},
		{name: "backup 128 bytes", body: `{"backup":"` + long(128) + `","confirm":true}`,
			want: &schema.RestoreRequest{Backup: long(128), Confirm: true, Timeout: 30}},
		{name: "backup 129 bytes", body: `{"backup":"` + long(129) + `","confirm":true}`, code: invalid, field: "backup"},
		{name: "backup as number", body: `{"backup":1,"confirm":true}`, code: invalid, field: "backup"},
		{name: "timeout 5", body: `{"backup":"1","confirm":true,"timeout":5}`, code: invalid, field: "timeout"},
		{name: "timeout 301", body: `{"backup":"1","confirm":true,"timeout":301}`, code: invalid, field: "timeout"},
		{name: "confirm null", body: `{"backup":"1","confirm":null}`, code: invalid, field: "confirm"},
		{name: "confirm string", body: `{"backup":"1","confirm":"yes"}`, code: invalid, field: "confirm"},
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.RestoreRequest]("")...))
}

func TestDecodeReplyRequest(t *testing.T) {
	def := func() schema.ReplyRequest { return schema.ReplyRequest{} }
	cases := []decodeCase[schema.ReplyRequest]{
		{name: "empty body", body: ``, code: invalid, field: "request_id"},
		{name: "empty id", body: `{"request_id":""}`, code: invalid, field: "request_id"},
		{name: "ok", body: `{"request_id":"req-1"}`, want: &schema.ReplyRequest{RequestID: "req-1"}},
		{name: "any bytes ok", body: `{"request_id":"a.b c/d"}`, want: &schema.ReplyRequest{RequestID: "a.b c/d"}},
		{name: "128 bytes", body: `{"request_id":"` + long(128) + `"}`, want: &schema.ReplyRequest{RequestID: long(128)}},
		{name: "129 bytes", body: `{"request_id":"` + long(129) + `"}`, code: invalid, field: "request_id"},
		{name: "number", body: `{"request_id":5}`, code: invalid, field: "request_id"},
		{name: "null", body: `{"request_id":null}`, code: invalid, field: "request_id"},
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.ReplyRequest]("")...))
}

func TestDecodeBackupRequests(t *testing.T) {
	runDecode(t, func() schema.BackupRequest { return schema.BackupRequest{} }, "", append([]decodeCase[schema.BackupRequest]{
		{name: "empty", body: ``, want: &schema.BackupRequest{}},
		{name: "empty object", body: `{}`, want: &schema.BackupRequest{}},
	}, commonBodyCases[schema.BackupRequest]("")...))
	runDecode(t, func() schema.BackupsRequest { return schema.BackupsRequest{} }, "", append([]decodeCase[schema.BackupsRequest]{
		{name: "empty", body: ``, want: &schema.BackupsRequest{}},
		{name: "field refused", body: `{"limit":1}`, code: invalid, field: "limit"},
	}, commonBodyCases[schema.BackupsRequest]("")...))
}

func TestDecodeTaskRequest(t *testing.T) {
	def := func() schema.TaskRequest { return schema.TaskRequest{} }
	cases := []decodeCase[schema.TaskRequest]{
		{name: "empty body", body: ``, code: invalid, field: "op"},
		{name: "unknown op", body: `{"op":"task.delete"}`, code: invalid, field: "op"},
		{name: "op upper case", body: `{"op":"TASK.GET"}`, code: invalid, field: "op"},
		{name: "op number", body: `{"op":1}`, code: invalid, field: "op"},
		{name: "op null", body: `{"op":null}`, code: invalid, field: "op"},
		{name: "args null", body: `{"op":"task.get","args":null}`, code: invalid, field: "args"},
		{name: "typo args", body: `{"op":"task.get","arg":{}}`, code: invalid, field: "arg"},
		{name: "with args", body: `{"op":"task.get","args":{"task_id":"t1"}}`,
			want: &schema.TaskRequest{Op: schema.OpTaskGet, Args: json.RawMessage(`{"task_id":"t1"}`)}},
		{name: "args kept raw", body: `{"op":"task.get","args":"x"}`,
			want: &schema.TaskRequest{Op: schema.OpTaskGet, Args: json.RawMessage(`"x"`)}},
	}
	for _, op := range schema.TaskOps {
		cases = append(cases, decodeCase[schema.TaskRequest]{name: "op " + op, body: `{"op":"` + op + `"}`,
			want: &schema.TaskRequest{Op: op}})
	}
	runDecode(t, def, "", append(cases, commonBodyCases[schema.TaskRequest]("")...))

	r := schema.TaskRequest{}
	e := schema.AsError(schema.Decode([]byte(`{"op":"task.delete"}`), &r))
	if allowed, ok := e.Details["allowed"].([]string); !ok || len(allowed) != 6 {
		t.Errorf("got details %v, want allowed = the 6 ops", e.Details)
	}
}

func TestMutates(t *testing.T) {
	want := map[string]bool{schema.OpTaskCreate: true, schema.OpTaskGet: false, schema.OpTaskList: false,
		schema.OpTaskUpdate: true, schema.OpTaskComplete: true, schema.OpTaskFail: true}
	for op, w := range want {
		if got := schema.Mutates(op); got != w {
			t.Errorf("Mutates(%q): got %v, want %v", op, got, w)
		}
	}
}

// Decode fills the defaults only where the body is silent: it starts from
// the value it is given and never zeroes a field the body leaves out.
func TestDecodeKeepsGivenDefaults(t *testing.T) {
	r := schema.RestartRequest{Graceful: true, PreserveState: false, Timeout: 77, Reason: schema.ReasonDRTest}
	if err := schema.Decode([]byte(`{"preserve_state":true}`), &r); err != nil {
		t.Fatal(err)
	}
	want := schema.RestartRequest{Graceful: true, PreserveState: true, Timeout: 77, Reason: schema.ReasonDRTest}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
}

func TestContractErrorExample(t *testing.T) {
	// The error example of CONTRACT.md, produced by the real decoder.
	r := schema.DefaultRestartRequest()
	e := schema.AsError(schema.Decode([]byte(`{"timeout":5}`), &r))
	got, err := json.Marshal(schema.NewEnvelope(e))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"io.restartcoord.v1.error","error":{"code":"INVALID_PARAMETERS","message":"timeout must be 10..300 seconds, got 5","details":{"field":"timeout"}}}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
