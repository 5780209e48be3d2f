package schema_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/restartcoord/restartcoord/schema"
)

func TestEnvelopeJSONShape(t *testing.T) {
	cases := []struct {
		name string
		err  *schema.Error
		want string
	}{
		{"with field", schema.Invalid("timeout", "timeout must be 10..300 seconds, got 5"),
			`{"type":"io.restartcoord.v1.error","error":{"code":"INVALID_PARAMETERS","message":"timeout must be 10..300 seconds, got 5","details":{"field":"timeout"}}}`},
		{"without details", schema.Errorf(schema.CodeNotFound, "task %s not found", "t1"),
			`{"type":"io.restartcoord.v1.error","error":{"code":"NOT_FOUND","message":"task t1 not found"}}`},
		{"restart in progress", schema.Errorf(schema.CodeRestartInProgress, "restart r-1 is running").WithDetail("restart_id", "r-1"),
			`{"type":"io.restartcoord.v1.error","error":{"code":"RESTART_IN_PROGRESS","message":"restart r-1 is running","details":{"restart_id":"r-1"}}}`},
		{"several details sorted", schema.Errorf(schema.CodeRateLimited, "slow down").WithDetail("retry_after", 1.5).WithDetail("limit", 10),
			`{"type":"io.restartcoord.v1.error","error":{"code":"RATE_LIMITED","message":"slow down","details":{"limit":10,"retry_after":1.5}}}`},
		{"blocking issues", schema.Errorf(schema.CodeSystemNotReady, "not ready").WithDetail("blocking_issues", []string{"a", "b"}),
			`{"type":"io.restartcoord.v1.error","error":{"code":"SYSTEM_NOT_READY","message":"not ready","details":{"blocking_issues":["a","b"]}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(schema.NewEnvelope(tc.err))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseEnvelopeRoundTrip(t *testing.T) {
	cases := []*schema.Error{
		schema.Invalid("args.job.steps", "job steps must be 1..%d, got %d", 1000000, 0),
		schema.Errorf(schema.CodeNotLeader, "ask the leader").WithDetail("leader", "coord-2"),
		schema.Errorf(schema.CodeRateLimited, "slow down").WithDetail("retry_after", 2.5),
		schema.Errorf(schema.CodeSystemNotReady, "not ready").WithDetail("blocking_issues", []any{"x", "y"}),
		schema.Errorf(schema.CodeInternal, "quote \" and <html> & unicode é"),
	}
	for _, e := range cases {
		t.Run(string(e.Code), func(t *testing.T) {
			data, err := json.Marshal(schema.NewEnvelope(e))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := schema.ParseEnvelope(data)
			if !ok {
				t.Fatalf("got ok false for %s, want true", data)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("got %#v, want %#v", got, e)
			}
			if got.Field() != e.Field() {
				t.Errorf("got field %q, want %q", got.Field(), e.Field())
			}
		})
	}
}

func TestParseEnvelopeRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"empty":         ``,
		"not JSON":      `timeout`,
		"array":         `[]`,
		"task reply":    `{"type":"io.restartcoord.v1.task_reply","ok":true,"result":{}}`,
		"health":        `{"type":"io.restartcoord.v1.health","healthy":true}`,
		"no type":       `{"error":{"code":"INTERNAL","message":"x"}}`,
		"no error":      `{"type":"io.restartcoord.v1.error"}`,
		"null error":    `{"type":"io.restartcoord.v1.error","error":null}`,
		"error string":  `{"type":"io.restartcoord.v1.error","error":"boom"}`,
		"other version": `{"type":"io.restartcoord.v2.error","error":{"code":"INTERNAL","message":"x"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if e, ok := schema.ParseEnvelope([]byte(body)); ok || e != nil {
				t.Errorf("got (%v, %v), want (nil, false)", e, ok)
			}
		})
	}
}

func TestAsError(t *testing.T) {
	if got := schema.AsError(nil); got != nil {
		t.Errorf("AsError(nil): got %v, want nil", got)
	}
	orig := schema.Errorf(schema.CodeNotFound, "task t1 not found")
	for name, err := range map[string]error{
		"direct":        orig,
		"wrapped":       fmt.Errorf("get: %w", orig),
		"wrapped twice": fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", orig)),
		"joined":        errors.Join(io.EOF, orig),
	} {
		t.Run(name, func(t *testing.T) {
			if got := schema.AsError(err); got != orig {
				t.Errorf("got %v, want the original *Error %v", got, orig)
			}
		})
	}
	t.Run("plain error", func(t *testing.T) {
		got := schema.AsError(fmt.Errorf("dial: %w", io.ErrUnexpectedEOF))
		if got.Code != schema.CodeInternal {
			t.Errorf("got code %s, want INTERNAL", got.Code)
		}
		if got.Message != "dial: unexpected EOF" {
			t.Errorf("got message %q, want %q", got.Message, "dial: unexpected EOF")
		}
		if got.Code.Status() != 500 {
			t.Errorf("got status %d, want 500", got.Code.Status())
		}
	})
}

func TestErrorsIsMatchesByCode(t *testing.T) {
	err := fmt.Errorf("restart: %w", schema.Errorf(schema.CodeRestartInProgress, "restart r-1 is running").WithDetail("restart_id", "r-1"))
	cases := []struct {
		name   string
		target error
		want   bool
	}{
		{"same code", &schema.Error{Code: schema.CodeRestartInProgress}, true},
		{"other code", &schema.Error{Code: schema.CodeSystemNotReady}, false},
		{"same code with message", &schema.Error{Code: schema.CodeRestartInProgress, Message: "x"}, false},
		{"plain error", io.EOF, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(err, tc.target); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCodeStatus(t *testing.T) {
	want := map[schema.Code]int{
		schema.CodeInvalidParameters: 400,
		schema.CodeUnauthorized:      403,
		schema.CodeNotFound:          404,
		schema.CodeRestartInProgress: 409,
		schema.CodeSystemNotReady:    409,
		schema.CodeStaleFencingToken: 409,
		schema.CodeExpired:           410,
		schema.CodeBufferFull:        429,
		schema.CodeRateLimited:       429,
		schema.CodeTimeoutExceeded:   504,
		schema.CodeStateCorruption:   500,
		schema.CodeProcessFailed:     500,
		schema.CodeNotLeader:         503,
		schema.CodeInternal:          500,
	}
	for code, status := range want {
		t.Run(string(code), func(t *testing.T) {
			if got := code.Status(); got != status {
				t.Errorf("got %d, want %d", got, status)
			}
			if !code.Known() {
				t.Errorf("got Known false, want true")
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		c := schema.Code("NO_SUCH_CODE")
		if c.Known() || c.Status() != 500 {
			t.Errorf("got Known %v status %d, want false 500", c.Known(), c.Status())
		}
	})
}

// The contract's codes are spelled as in CONTRACT.md.
func TestCodeSpelling(t *testing.T) {
	for code, want := range map[schema.Code]string{
		schema.CodeInvalidParameters: "INVALID_PARAMETERS", schema.CodeUnauthorized: "UNAUTHORIZED",
		schema.CodeNotFound: "NOT_FOUND", schema.CodeRestartInProgress: "RESTART_IN_PROGRESS",
		schema.CodeSystemNotReady: "SYSTEM_NOT_READY", schema.CodeStaleFencingToken: "STALE_FENCING_TOKEN",
		schema.CodeExpired: "EXPIRED", schema.CodeBufferFull: "BUFFER_FULL", schema.CodeRateLimited: "RATE_LIMITED",
		schema.CodeTimeoutExceeded: "TIMEOUT_EXCEEDED", schema.CodeStateCorruption: "STATE_CORRUPTION",
		schema.CodeProcessFailed: "PROCESS_FAILED", schema.CodeNotLeader: "NOT_LEADER", schema.CodeInternal: "INTERNAL",
	} {
		if string(code) != want {
			t.Errorf("got %q, want %q", code, want)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	e := schema.Errorf(schema.CodeExpired, "request %s expired", "r1")
	if got, want := e.Error(), "EXPIRED: request r1 expired"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
	if e.Field() != "" || e.Details != nil {
		t.Errorf("got field %q details %v, want none", e.Field(), e.Details)
	}
	if got := e.WithDetail("request_id", "r1"); got != e || e.Details["request_id"] != "r1" {
		t.Errorf("WithDetail: got %v details %v, want the same error with request_id", got, e.Details)
	}
	if got := schema.Invalid("", "body must be a JSON object"); got.Details != nil || got.Code != schema.CodeInvalidParameters {
		t.Errorf("Invalid(\"\"): got %#v, want INVALID_PARAMETERS without details", got)
	}
	if got := schema.Invalid("limit", "x"); got.Field() != "limit" {
		t.Errorf("Invalid(limit): got field %q, want limit", got.Field())
	}
	if got := (&schema.Error{Details: map[string]any{"field": 3}}).Field(); got != "" {
		t.Errorf("non-string field: got %q, want \"\"", got)
	}
	if got := schema.CheckToken("node_id", "a.b"); got == nil {
		t.Errorf("CheckToken(a.b): got nil, want an error")
	} else {
		wantErr(t, got, invalid, "node_id")
	}
	wantErr(t, schema.CheckToken("node_id", "node-1"), "", "")
}
