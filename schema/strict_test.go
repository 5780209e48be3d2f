package schema_test

import (
	"testing"

	"github.com/restartcoord/restartcoord/schema"
)

// Keys must match exactly and nulls are refused at any depth: encoding/json
// alone would accept "GRACEFUL" and skip a nested null, silently meaning a
// default.
func TestStrictKeysAndNullsAtAnyDepth(t *testing.T) {
	restart := []struct{ in, field string }{
		{`{"GRACEFUL":false}`, "GRACEFUL"},
		{`{"Graceful":false}`, "Graceful"},
		{`{"graceful":null}`, "graceful"},
	}
	for _, c := range restart {
		t.Run(c.in, func(t *testing.T) {
			r := schema.DefaultRestartRequest()
			wantErr(t, schema.Decode([]byte(c.in), &r), schema.CodeInvalidParameters, c.field)
		})
	}
	args := []struct{ in, field string }{
		{`{"title":"a","job":{"kind":"steps","steps":1,"step_seconds":null}}`, "args.job.step_seconds"},
		{`{"title":"a","job":{"kind":"steps","stepz":1}}`, "args.job.stepz"},
		{`{"title":"a","Title":"b"}`, "args.Title"},
		{`{"title":"a","job":null}`, "args.job"},
	}
	for _, c := range args {
		t.Run(c.in, func(t *testing.T) {
			var a schema.TaskCreateArgs
			wantErr(t, schema.DecodeArgs([]byte(c.in), &a, "args"), schema.CodeInvalidParameters, c.field)
		})
	}
}

func TestParseEnvelopeNeedsACode(t *testing.T) {
	if _, ok := schema.ParseEnvelope([]byte(`{"type":"io.restartcoord.v1.error","error":{}}`)); ok {
		t.Fatal("an envelope without a code was accepted")
	}
}
