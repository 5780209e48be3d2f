package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// temporary is an error that says it is temporary, as node's errLeaseFree does.
type temporary struct{}

func (temporary) Error() string   { return "temporary" }
func (temporary) Temporary() bool { return true }

func TestTransient(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("replaying journal: %w", nats.ErrNoResponders), true},
		{fmt.Errorf("refresh: %w", jetstream.ErrNoStreamResponse), true},
		{context.DeadlineExceeded, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{errors.New("bus: list snapshots: nats: JetStream system temporarily unavailable"), true},
		{fmt.Errorf("start: %w", temporary{}), true},
		{jetstream.ErrServerShutdown, true}, // a fetch cut short: its consumer's server stopped
		{jetstream.ErrConsumerLeadershipChanged, true},
		{jetstream.ErrConsumerDeleted, true},
		{nil, false},
		{fmt.Errorf("fetch: %w", nats.ErrConnectionClosed), false}, // closed by its owner: never opens again
		{errors.New("configuration says fail_start: refusing to become healthy"), false},
		{&jetstream.APIError{Code: 404, ErrorCode: 10059, Description: "stream not found"}, false},
		{schema.Errorf(schema.CodeStateCorruption, "checksum mismatch"), false},
	}
	for _, tc := range cases {
		if got := bus.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
