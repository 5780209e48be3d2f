package schema_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/restartcoord/restartcoord/schema"
)

// The args of every task op are decoded with DecodeArgs and prefix "args",
// so fields come out as "args.title", "args.job.steps", ...

func TestDecodeTaskCreateArgs(t *testing.T) {
	def := func() schema.TaskCreateArgs { return schema.TaskCreateArgs{} }
	job := func(steps int, s float64) *schema.Job {
		return &schema.Job{Kind: schema.JobKindSteps, Steps: steps, StepSeconds: s}
	}
	cases := []decodeCase[schema.TaskCreateArgs]{
		{name: "empty args", body: ``, code: invalid, field: "args.title"},
		{name: "empty object", body: `{}`, code: invalid, field: "args.title"},
		{name: "empty title", body: `{"title":""}`, code: invalid, field: "args.title"},
		{name: "title only", body: `{"title":"Resize images"}`, want: &schema.TaskCreateArgs{Title: "Resize images"}},
		{name: "title 256 bytes", body: `{"title":"` + long(256) + `"}`, want: &schema.TaskCreateArgs{Title: long(256)}},
		{name: "title 257 bytes", body: `{"title":"` + long(257) + `"}`, code: invalid, field: "args.title"},
		{name: "title multibyte over limit", body: `{"title":"` + strings.Repeat("é", 129) + `"}`, code: invalid, field: "args.title"},
		{name: "title number", body: `{"title":1}`, code: invalid, field: "args.title"},
		{name: "title null", body: `{"title":null}`, code: invalid, field: "args.title"},
		{name: "title typo", body: `{"titel":"x"}`, code: invalid, field: "args.titel"},
		{name: "description", body: `{"title":"x","description":"d"}`, want: &schema.TaskCreateArgs{Title: "x", Description: "d"}},
		{name: "description 64KiB", body: `{"title":"x","description":"` + long(64<<10) + `"}`,
			want: &schema.TaskCreateArgs{Title: "x", Description: long(64 << 10)}},
		{name: "description too long", body: `{"title":"x","description":"` + long(64<<10+1) + `"}`, code: invalid, field: "args.description"},
		{name: "job", body: `{"title":"x","job":{"kind":"steps","steps":50,"step_seconds":0.1}}`,
			want: &schema.TaskCreateArgs{Title: "x", Job: job(50, 0.1)}},
		{name: "job 1 step no wait", body: `{"title":"x","job":{"kind":"steps","steps":1,"step_seconds":0}}`,
			want: &schema.TaskCreateArgs{Title: "x", Job: job(1, 0)}},
		{name: "job max", body: `{"title":"x","job":{"kind":"steps","steps":1000000,"step_seconds":3600}}`,
			want: &schema.TaskCreateArgs{Title: "x", Job: job(1000000, 3600)}},
		{name: "job unknown kind", body: `{"title":"x","job":{"kind":"loop","steps":5}}`, code: invalid, field: "args.job.kind"},
		{name: "job missing kind", body: `{"title":"x","job":{"steps":5}}`, code: invalid, field: "args.job.kind"},
		{name: "job empty", body: `{"title":"x","job":{}}`, code: invalid, field: "args.job.kind"},
		{name: "job 0 steps", body: `{"title":"x","job":{"kind":"steps","steps":0}}`, code: invalid, field: "args.job.steps"},
		{name: "job negative steps", body: `{"title":"x","job":{"kind":"steps","steps":-1}}`, code: invalid, field: "args.job.steps"},
		{name: "job too many steps", body: `{"title":"x","job":{"kind":"steps","steps":1000001}}`, code: invalid, field: "args.job.steps"},
		{name: "job steps fraction", body: `{"title":"x","job":{"kind":"steps","steps":1.5}}`, code: invalid, field: "args.job.steps"},
		{name: "job steps string", body: `{"title":"x","job":{"kind":"steps","steps":"5"}}`, code: invalid, field: "args.job.steps"},
		{name: "job negative step_seconds", body: `{"title":"x","job":{"kind":"steps","steps":5,"step_seconds":-0.1}}`,
			code: invalid, field: "args.job.step_seconds"},
		{name: "job step_seconds over an hour", body: `{"title":"x","job":{"kind":"steps","steps":5,"step_seconds":3600.5}}`,
			code: invalid, field: "args.job.step_seconds"},
		{name: "job step_seconds string", body: `{"title":"x","job":{"kind":"steps","steps":5,"step_seconds":"1"}}`,
			code: invalid, field: "args.job.step_seconds"},
		{name: "job not an object", body: `{"title":"x","job":"steps"}`, code: invalid, field: "args.job"},
		{name: "job array", body: `{"title":"x","job":[]}`, code: invalid, field: "args.job"},
		{name: "job null", body: `{"title":"x","job":null}`, code: invalid, field: "args.job"},
		{name: "title checked before job", body: `{"job":{"kind":"steps","steps":0}}`, code: invalid, field: "args.title"},
	}
	runDecode(t, def, "args", append(cases, commonBodyCases[schema.TaskCreateArgs]("args")...))
}

// An unknown field inside job is refused. encoding/json reports only the
// key, not its path, so the field is named "args.stepz" (not
// "args.job.stepz"); the test pins what matters: refused, under args.
func TestDecodeTaskCreateArgsNestedUnknownField(t *testing.T) {
	var a schema.TaskCreateArgs
	err := schema.DecodeArgs([]byte(`{"title":"x","job":{"kind":"steps","steps":5,"stepz":1}}`), &a, "args")
	e := schema.AsError(err)
	if e == nil || e.Code != invalid {
		t.Fatalf("got %v, want INVALID_PARAMETERS", err)
	}
	if f := e.Field(); !strings.HasPrefix(f, "args.") || !strings.HasSuffix(f, "stepz") {
		t.Errorf("got field %q, want args.[job.]stepz", f)
	}
}

func TestDecodeArgsWithoutPrefix(t *testing.T) {
	var a schema.TaskCreateArgs
	wantErr(t, schema.DecodeArgs([]byte(`{"title":"x","job":{"kind":"steps","steps":0}}`), &a, ""), invalid, "job.steps")
	wantErr(t, schema.DecodeArgs([]byte(`{"titel":"x"}`), &a, ""), invalid, "titel")
	wantErr(t, schema.DecodeArgs([]byte(`[]`), &a, ""), invalid, "")
}

func TestDecodeTaskIDArgs(t *testing.T) {
	def := func() schema.TaskIDArgs { return schema.TaskIDArgs{} }
	cases := []decodeCase[schema.TaskIDArgs]{
		{name: "missing", body: `{}`, code: invalid, field: "args.task_id"},
		{name: "empty body", body: ``, code: invalid, field: "args.task_id"},
		{name: "ok", body: `{"task_id":"t-1_A"}`, want: &schema.TaskIDArgs{TaskID: "t-1_A"}},
		{name: "64 chars", body: `{"task_id":"` + long(64) + `"}`, want: &schema.TaskIDArgs{TaskID: long(64)}},
		{name: "65 chars", body: `{"task_id":"` + long(65) + `"}`, code: invalid, field: "args.task_id"},
		{name: "dot", body: `{"task_id":"t.1"}`, code: invalid, field: "args.task_id"},
		{name: "number", body: `{"task_id":1}`, code: invalid, field: "args.task_id"},
		{name: "null", body: `{"task_id":null}`, code: invalid, field: "args.task_id"},
		{name: "typo", body: `{"id":"t1"}`, code: invalid, field: "args.id"},
	}
	runDecode(t, def, "args", append(cases, commonBodyCases[schema.TaskIDArgs]("args")...))
}

func TestDecodeTaskListArgs(t *testing.T) {
	def := schema.DefaultTaskListArgs
	if got := def(); got != (schema.TaskListArgs{Limit: 100}) {
		t.Fatalf("got default %+v, want limit 100", got)
	}
	cases := []decodeCase[schema.TaskListArgs]{
		{name: "empty body", body: ``, want: ptr(def())},
		{name: "empty object", body: `{}`, want: ptr(def())},
		{name: "after", body: `{"after":"t-5"}`, want: &schema.TaskListArgs{After: "t-5", Limit: 100}},
		{name: "limit 1", body: `{"limit":1}`, want: &schema.TaskListArgs{Limit: 1}},
		{name: "limit 1000", body: `{"limit":1000}`, want: &schema.TaskListArgs{Limit: 1000}},
		{name: "limit 0", body: `{"limit":0}`, code: invalid, field: "args.limit"},
		{name: "limit 1001", body: `{"limit":1001}`, code: invalid, field: "args.limit"},
		{name: "limit string", body: `{"limit":"5"}`, code: invalid, field: "args.limit"},
		{name: "limit null", body: `{"limit":null}`, code: invalid, field: "args.limit"},
		{name: "unknown status", body: `{"status":"running"}`, code: invalid, field: "args.status"},
		{name: "status number", body: `{"status":1}`, code: invalid, field: "args.status"},
		{name: "status null", body: `{"status":null}`, code: invalid, field: "args.status"},
	}
	for _, s := range schema.TaskStatuses {
		cases = append(cases, decodeCase[schema.TaskListArgs]{name: "status " + string(s),
			body: `{"status":"` + string(s) + `"}`, want: &schema.TaskListArgs{Status: s, Limit: 100}})
	}
	runDecode(t, def, "args", append(cases, commonBodyCases[schema.TaskListArgs]("args")...))
}

func TestDecodeTaskUpdateArgs(t *testing.T) {
	def := func() schema.TaskUpdateArgs { return schema.TaskUpdateArgs{} }
	big := `{"b":"` + long(256<<10) + `"}`
	cases := []decodeCase[schema.TaskUpdateArgs]{
		{name: "needs progress or checkpoint", body: `{"task_id":"t1"}`, code: invalid, field: "args.progress"},
		{name: "needs task_id", body: `{"progress":5}`, code: invalid, field: "args.task_id"},
		{name: "progress 0", body: `{"task_id":"t1","progress":0}`, want: &schema.TaskUpdateArgs{TaskID: "t1", Progress: ptr(0.0)}},
		{name: "progress 100", body: `{"task_id":"t1","progress":100}`, want: &schema.TaskUpdateArgs{TaskID: "t1", Progress: ptr(100.0)}},
		{name: "progress 42.5", body: `{"task_id":"t1","progress":42.5}`, want: &schema.TaskUpdateArgs{TaskID: "t1", Progress: ptr(42.5)}},
		{name: "progress negative", body: `{"task_id":"t1","progress":-0.1}`, code: invalid, field: "args.progress"},
		{name: "progress over 100", body: `{"task_id":"t1","progress":100.1}`, code: invalid, field: "args.progress"},
		{name: "progress string", body: `{"task_id":"t1","progress":"5"}`, code: invalid, field: "args.progress"},
		{name: "progress null", body: `{"task_id":"t1","progress":null}`, code: invalid, field: "args.progress"},
		{name: "checkpoint only", body: `{"task_id":"t1","checkpoint":{"step":3}}`,
			want: &schema.TaskUpdateArgs{TaskID: "t1", Checkpoint: json.RawMessage(`{"step":3}`)}},
		{name: "checkpoint any JSON", body: `{"task_id":"t1","checkpoint":[1,"two",null]}`,
			want: &schema.TaskUpdateArgs{TaskID: "t1", Checkpoint: json.RawMessage(`[1,"two",null]`)}},
		{name: "both", body: `{"task_id":"t1","progress":7,"checkpoint":7}`,
			want: &schema.TaskUpdateArgs{TaskID: "t1", Progress: ptr(7.0), Checkpoint: json.RawMessage(`7`)}},
		{name: "checkpoint too big", body: `{"task_id":"t1","checkpoint":` + big + `}`, code: invalid, field: "args.checkpoint"},
		{name: "checkpoint null", body: `{"task_id":"t1","checkpoint":null}`, code: invalid, field: "args.checkpoint"},
		{name: "bad task_id", body: `{"task_id":"t 1","progress":1}`, code: invalid, field: "args.task_id"},
		{name: "typo", body: `{"task_id":"t1","progres":1}`, code: invalid, field: "args.progres"},
	}
	runDecode(t, def, "args", append(cases, commonBodyCases[schema.TaskUpdateArgs]("args")...))
}

func TestDecodeTaskCompleteArgs(t *testing.T) {
	def := func() schema.TaskCompleteArgs { return schema.TaskCompleteArgs{} }
	cases := []decodeCase[schema.TaskCompleteArgs]{
		{name: "no result", body: `{"task_id":"t1"}`, want: &schema.TaskCompleteArgs{TaskID: "t1"}},
		{name: "result", body: `{"task_id":"t1","result":{"images":50}}`,
			want: &schema.TaskCompleteArgs{TaskID: "t1", Result: json.RawMessage(`{"images":50}`)}},
		{name: "result too big", body: `{"task_id":"t1","result":"` + long(256<<10) + `"}`, code: invalid, field: "args.result"},
		{name: "result null", body: `{"task_id":"t1","result":null}`, code: invalid, field: "args.result"},
		{name: "needs task_id", body: `{}`, code: invalid, field: "args.task_id"},
		{name: "bad task_id", body: `{"task_id":"*"}`, code: invalid, field: "args.task_id"},
		{name: "typo", body: `{"task_id":"t1","results":1}`, code: invalid, field: "args.results"},
	}
	runDecode(t, def, "args", append(cases, commonBodyCases[schema.TaskCompleteArgs]("args")...))
}

func TestDecodeTaskFailArgs(t *testing.T) {
	def := func() schema.TaskFailArgs { return schema.TaskFailArgs{} }
	cases := []decodeCase[schema.TaskFailArgs]{
		{name: "ok", body: `{"task_id":"t1","error":"disk full"}`, want: &schema.TaskFailArgs{TaskID: "t1", Error: "disk full"}},
		{name: "needs error", body: `{"task_id":"t1"}`, code: invalid, field: "args.error"},
		{name: "empty error", body: `{"task_id":"t1","error":""}`, code: invalid, field: "args.error"},
		{name: "error 64KiB", body: `{"task_id":"t1","error":"` + long(64<<10) + `"}`,
			want: &schema.TaskFailArgs{TaskID: "t1", Error: long(64 << 10)}},
		{name: "error too long", body: `{"task_id":"t1","error":"` + long(64<<10+1) + `"}`, code: invalid, field: "args.error"},
		{name: "error object", body: `{"task_id":"t1","error":{"msg":"x"}}`, code: invalid, field: "args.error"},
		{name: "error null", body: `{"task_id":"t1","error":null}`, code: invalid, field: "args.error"},
		{name: "needs task_id", body: `{"error":"x"}`, code: invalid, field: "args.task_id"},
	}
	runDecode(t, def, "args", append(cases, commonBodyCases[schema.TaskFailArgs]("args")...))
}

// argsFor is the args value (with its defaults) of a task op.
func argsFor(op string) schema.Validator {
	switch op {
	case schema.OpTaskCreate:
		return &schema.TaskCreateArgs{}
	case schema.OpTaskGet:
		return &schema.TaskIDArgs{}
	case schema.OpTaskList:
		a := schema.DefaultTaskListArgs()
		return &a
	case schema.OpTaskUpdate:
		return &schema.TaskUpdateArgs{}
	case schema.OpTaskComplete:
		return &schema.TaskCompleteArgs{}
	case schema.OpTaskFail:
		return &schema.TaskFailArgs{}
	}
	return nil
}

func TestArgsForCoversEveryOp(t *testing.T) {
	for _, op := range schema.TaskOps {
		if argsFor(op) == nil {
			t.Errorf("argsFor(%q): got nil, want an args type", op)
		}
	}
}

// A whole client request body: TaskRequest first, then its op's args.
func TestDecodeTaskRequestThenArgs(t *testing.T) {
	cases := []struct {
		name, body string
		code       schema.Code
		field      string
	}{
		{"create", `{"op":"task.create","args":{"title":"Resize images","job":{"kind":"steps","steps":50,"step_seconds":0.1}}}`, "", ""},
		{"create without args", `{"op":"task.create"}`, invalid, "args.title"},
		{"create bad steps", `{"op":"task.create","args":{"title":"x","job":{"kind":"steps","steps":0}}}`, invalid, "args.job.steps"},
		{"create steps wrong type", `{"op":"task.create","args":{"title":"x","job":{"kind":"steps","steps":true}}}`, invalid, "args.job.steps"},
		{"get", `{"op":"task.get","args":{"task_id":"t1"}}`, "", ""},
		{"get args string", `{"op":"task.get","args":"t1"}`, invalid, "args"},
		{"get args array", `{"op":"task.get","args":["t1"]}`, invalid, "args"},
		{"list no args", `{"op":"task.list"}`, "", ""},
		{"list bad status", `{"op":"task.list","args":{"status":"running"}}`, invalid, "args.status"},
		{"update no change", `{"op":"task.update","args":{"task_id":"t1"}}`, invalid, "args.progress"},
		{"update", `{"op":"task.update","args":{"task_id":"t1","progress":50,"checkpoint":{"step":25}}}`, "", ""},
		{"complete", `{"op":"task.complete","args":{"task_id":"t1","result":{"ok":true}}}`, "", ""},
		{"fail", `{"op":"task.fail","args":{"task_id":"t1","error":"boom"}}`, "", ""},
		{"fail unknown field", `{"op":"task.fail","args":{"task_id":"t1","error":"boom","retry":true}}`, invalid, "args.retry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req schema.TaskRequest
			if err := schema.Decode([]byte(tc.body), &req); err != nil {
				t.Fatalf("got TaskRequest error %v, want none", err)
			}
			wantErr(t, schema.DecodeArgs(req.Args, argsFor(req.Op), "args"), tc.code, tc.field)
		})
	}
}
