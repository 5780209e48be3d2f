package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// What a publish error means: a full buffer (by JetStream's error code and
// the limit it names), a retry that may succeed, or a final refusal.
func TestPublishErrorsAreClassified(t *testing.T) {
	api := func(code int, errCode jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: desc})
	}
	full := api(503, 10077, "maximum messages per subject exceeded")
	if !bufferFull(full) || retryable(full) {
		t.Fatalf("per-subject limit: bufferFull %v, retryable %v", bufferFull(full), retryable(full))
	}
	for name, err := range map[string]error{
		"no responders":      jetstream.ErrNoStreamResponse,
		"timeout":            context.DeadlineExceeded,
		"nats timeout":       nats.ErrTimeout,
		"reconnect buffer":   nats.ErrReconnectBufExceeded,
		"no leader":          api(503, 10008, "JetStream system temporarily unavailable"),
		"store closed":       api(503, 10077, "store is closed"),
		"jetstream starting": api(503, 10076, "JetStream not enabled"),
	} {
		if bufferFull(err) || !retryable(err) {
			t.Errorf("%s: bufferFull %v, retryable %v; want a retry", name, bufferFull(err), retryable(err))
		}
	}
	for name, err := range map[string]error{
		"connection closed": nats.ErrConnectionClosed,
		"too large":         nats.ErrMaxPayload,
		"stream limit":      api(503, 10077, "maximum messages exceeded"),
		"bad request":       api(400, 10003, "bad request"),
	} {
		if bufferFull(err) || retryable(err) {
			t.Errorf("%s: bufferFull %v, retryable %v; want a final error", name, bufferFull(err), retryable(err))
		}
	}
}

// Reply errors: BUFFER_FULL and EXPIRED match their sentinels and still
// carry the *schema.Error; any other code is the *schema.Error itself.
func TestReplyErrorsWrapTheirCode(t *testing.T) {
	for code, sentinel := range map[schema.Code]error{schema.CodeExpired: ErrExpired, schema.CodeBufferFull: ErrBufferFull, schema.CodeNotFound: nil} {
		_, err := decodeReply(schema.TaskReplyBody("r1", nil, schema.Errorf(code, "x")))
		var se *schema.Error
		if !errors.As(err, &se) || se.Code != code {
			t.Fatalf("%s: %v does not carry its *schema.Error", code, err)
		}
		if sentinel != nil && !errors.Is(err, sentinel) {
			t.Fatalf("%s: %v does not match %v", code, err, sentinel)
		}
		if sentinel == nil && err != error(se) {
			t.Fatalf("%s: %T, want the *schema.Error itself", code, err)
		}
	}
	raw, err := decodeReply(schema.TaskReplyBody("r1", map[string]int{"a": 1}, nil))
	if err != nil || string(raw) != `{"a":1}` {
		t.Fatalf("ok reply: %s, %v", raw, err)
	}
}
