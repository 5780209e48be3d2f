package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

type echoReply struct {
	Type  string `json:"type"`
	Got   string `json:"got"`
	Token string `json:"token"`
}

// serveTest starts a connection and a service with endpoints under
// "test.<name>" that exercise the envelope, timeouts and concurrency.
func serveTest(t *testing.T) (*bus.Conn, *bus.Conn) {
	t.Helper()
	srv := startServer(t)
	svcConn := connect(t, srv.URL(), bus.ConnOptions{Name: "svc"})
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	slow := func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
			return errors.New("slow handler never released")
		}
	}
	s, err := svcConn.Serve(bus.ServiceConfig{Name: "bus-test", Version: "1.0.0", Description: "bus tests",
		Endpoints: []bus.Endpoint{
			{Name: "value", Subject: "test.value", Handler: func(_ context.Context, data []byte, hdr nats.Header) (any, error) {
				return echoReply{Type: "io.restartcoord.v1.echo", Got: string(data), Token: hdr.Get(schema.HeaderFencingToken)}, nil
			}},
			{Name: "invalid", Subject: "test.invalid", Handler: func(context.Context, []byte, nats.Header) (any, error) {
				return nil, schema.Invalid("x", "x must be 1..3, got %d", 7)
			}},
			{Name: "conflict", Subject: "test.conflict", Handler: func(context.Context, []byte, nats.Header) (any, error) {
				return nil, fmt.Errorf("wrapped: %w", schema.Errorf(schema.CodeRestartInProgress, "restart r1 running").WithDetail("restart_id", "r1"))
			}},
			{Name: "plain", Subject: "test.plain", Handler: func(context.Context, []byte, nats.Header) (any, error) {
				return nil, errors.New("disk on fire")
			}},
			{Name: "unencodable", Subject: "test.unencodable", Handler: func(context.Context, []byte, nats.Header) (any, error) {
				return map[string]any{"c": make(chan int)}, nil
			}},
			{Name: "slow", Subject: "test.slow", Handler: func(ctx context.Context, data []byte, _ nats.Header) (any, error) {
				if string(data) == `"fast"` {
					return "fast", nil
				}
				if err := slow(ctx); err != nil {
					return nil, err
				}
				return "slow", nil
			}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unblock()
		if err := s.Stop(); err != nil {
			t.Errorf("service Stop: %v", err)
		}
	})
	client := connect(t, srv.URL(), bus.ConnOptions{Name: "client"})
	return svcConn, client
}

func TestRequestReplies(t *testing.T) {
	_, c := serveTest(t)
	tests := []struct {
		name       string
		subject    string
		body       any
		wantData   string      // exact reply body, when set
		wantCode   schema.Code // contract error, when set
		wantField  string
		wantStatus string // Nats-Service-Error-Code
		wantIs     error
	}{
		{name: "value", subject: "test.value", body: map[string]int{"a": 1},
			wantData: `{"type":"io.restartcoord.v1.echo","got":"{\"a\":1}","token":""}`},
		{name: "nil body is {}", subject: "test.value", body: nil,
			wantData: `{"type":"io.restartcoord.v1.echo","got":"{}","token":""}`},
		{name: "raw bytes sent as is", subject: "test.value", body: []byte("not json"),
			wantData: `{"type":"io.restartcoord.v1.echo","got":"not json","token":""}`},
		{name: "invalid", subject: "test.invalid", wantCode: schema.CodeInvalidParameters, wantField: "x", wantStatus: "400"},
		{name: "wrapped contract error", subject: "test.conflict", wantCode: schema.CodeRestartInProgress, wantStatus: "409"},
		{name: "plain error is internal", subject: "test.plain", wantCode: schema.CodeInternal, wantStatus: "500"},
		{name: "unencodable value is internal", subject: "test.unencodable", wantCode: schema.CodeInternal, wantStatus: "500"},
		{name: "no responders", subject: "test.nobody", wantIs: bus.ErrNoResponders},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			data, err := c.Request(ctx, tc.subject, tc.body, nil)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("request took %s", d)
			}
			switch {
			case tc.wantIs != nil:
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("err = %v, want %v", err, tc.wantIs)
				}
				if !bus.Retryable(err) {
					t.Errorf("%v should be retryable (the node may come back)", err)
				}
				return
			case tc.wantCode != "":
				var se *schema.Error
				if !errors.As(err, &se) {
					t.Fatalf("err = %v (%T), want *schema.Error", err, err)
				}
				if se.Code != tc.wantCode || se.Field() != tc.wantField {
					t.Errorf("error %+v, want code %s field %q", se, tc.wantCode, tc.wantField)
				}
				if !errors.Is(err, &schema.Error{Code: tc.wantCode}) {
					t.Errorf("errors.Is by code failed for %v", err)
				}
				if bus.Retryable(err) {
					t.Errorf("a contract error reply must not be retryable")
				}
				// The body is the envelope.
				var env struct {
					Type  string        `json:"type"`
					Error *schema.Error `json:"error"`
				}
				if jerr := json.Unmarshal(data, &env); jerr != nil || env.Type != schema.TypeError || env.Error == nil || env.Error.Code != tc.wantCode {
					t.Errorf("body %s is not the error envelope (%v)", data, jerr)
				}
				// And the micro service headers are set.
				m, rerr := c.Conn.RequestMsg(&nats.Msg{Subject: tc.subject, Data: []byte("{}")}, 2*time.Second)
				if rerr != nil {
					t.Fatal(rerr)
				}
				if got := m.Header.Get(micro.ErrorCodeHeader); got != tc.wantStatus {
					t.Errorf("%s = %q, want %q", micro.ErrorCodeHeader, got, tc.wantStatus)
				}
				if m.Header.Get(micro.ErrorHeader) == "" {
					t.Errorf("%s header missing", micro.ErrorHeader)
				}
			default:
				if err != nil || string(data) != tc.wantData {
					t.Fatalf("Request = %s, %v; want %s", data, err, tc.wantData)
				}
			}
		})
	}

	t.Run("headers reach the handler", func(t *testing.T) {
		var out echoReply
		hdr := nats.Header{}
		hdr.Set(schema.HeaderFencingToken, "42")
		if err := c.RequestJSON(testCtx(t, 5*time.Second), "test.value", nil, hdr, &out); err != nil {
			t.Fatal(err)
		}
		if out.Token != "42" || out.Got != "{}" {
			t.Errorf("reply %+v", out)
		}
	})
	t.Run("RequestJSON error reply", func(t *testing.T) {
		var out echoReply
		err := c.RequestJSON(testCtx(t, 5*time.Second), "test.invalid", nil, nil, &out)
		var se *schema.Error
		if !errors.As(err, &se) || se.Field() != "x" {
			t.Fatalf("RequestJSON = %v, want INVALID_PARAMETERS on x", err)
		}
		if out != (echoReply{}) {
			t.Errorf("out filled from an error reply: %+v", out)
		}
	})
	t.Run("RequestJSON undecodable reply", func(t *testing.T) {
		var out struct{ Got int }
		err := c.RequestJSON(testCtx(t, 5*time.Second), "test.value", nil, nil, &out)
		if err == nil {
			t.Fatal("decoding a string into an int succeeded")
		}
	})
	t.Run("unencodable body", func(t *testing.T) {
		if _, err := c.Request(testCtx(t, 5*time.Second), "test.value", make(chan int), nil); err == nil {
			t.Fatal("a channel body was sent")
		}
	})
}

func TestRequestTimeout(t *testing.T) {
	_, c := serveTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Request(ctx, "test.slow", "slow", nil)
	if !errors.Is(err, bus.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("timed out after %s, want about 300ms", d)
	}
	if !bus.Retryable(err) {
		t.Error("a timeout should be retryable")
	}
}

func TestServeHandlesRequestsConcurrently(t *testing.T) {
	_, c := serveTest(t)
	// The slow request blocks until the test ends (the service's Stop
	// cancels it), so a fast answer cannot come from it having finished.
	slowCtx, cancelSlow := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSlow()
	slowDone := make(chan error, 1)
	go func() {
		_, err := c.Request(slowCtx, "test.slow", "slow", nil)
		slowDone <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the slow request reach its handler

	tests := []struct {
		name    string
		subject string
		body    any
		want    string
	}{
		{"other endpoint", "test.value", nil, `"got":"{}"`},
		{"same endpoint", "test.slow", "fast", `"fast"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			data, err := c.Request(ctx, tc.subject, tc.body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("fast request took %s behind a slow one", d)
			}
			if !strings.Contains(string(data), tc.want) {
				t.Errorf("reply %s, want %s", data, tc.want)
			}
		})
	}
	select {
	case err := <-slowDone:
		t.Fatalf("slow request returned early: %v", err)
	default:
	}
}

func TestServiceStopCancelsHandlers(t *testing.T) {
	srv := startServer(t)
	svcConn := connect(t, srv.URL(), bus.ConnOptions{Name: "svc"})
	started := make(chan struct{}, 1)
	handlerErr := make(chan error, 1)
	s, err := svcConn.Serve(bus.ServiceConfig{Name: "stopper", Version: "1.0.0", Endpoints: []bus.Endpoint{
		{Name: "block", Subject: "test.block", Handler: func(ctx context.Context, _ []byte, _ nats.Header) (any, error) {
			started <- struct{}{}
			select {
			case <-ctx.Done():
				handlerErr <- ctx.Err()
			case <-time.After(5 * time.Second):
				handlerErr <- errors.New("not cancelled")
			}
			return nil, ctx.Err()
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, srv.URL(), bus.ConnOptions{Name: "client"})
	go func() { _, _ = c.Request(testCtx(t, 5*time.Second), "test.block", nil, nil) }()
	select {
	case <-started:
	case <-time.After(2 * time.Second):
		t.Fatal("handler never started")
	}
	start := time.Now()
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Stop took %s", d)
	}
	// Stop waited for the handler, which saw its context cancelled.
	select {
	case err := <-handlerErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler ended with %v, want context.Canceled", err)
		}
	default:
		t.Error("Stop returned before the handler ended")
	}
}

func TestServiceNoHandlerAfterStop(t *testing.T) {
	srv := startServer(t)
	svcConn := connect(t, srv.URL(), bus.ConnOptions{Name: "svc"})
	var mu sync.Mutex
	stopped, lateCalls := false, 0
	s, err := svcConn.Serve(bus.ServiceConfig{Name: "stopper", Version: "1.0.0", Endpoints: []bus.Endpoint{
		{Name: "ping", Subject: "test.ping", Handler: func(context.Context, []byte, nats.Header) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				lateCalls++
			}
			return "pong", nil
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, srv.URL(), bus.ConnOptions{Name: "client"})
	if _, err := c.Request(testCtx(t, 5*time.Second), "test.ping", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	stopped = true
	mu.Unlock()
	_, err = c.Request(testCtx(t, 5*time.Second), "test.ping", nil, nil)
	if !errors.Is(err, bus.ErrNoResponders) {
		t.Errorf("request after Stop = %v, want ErrNoResponders", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if lateCalls > 0 {
		t.Errorf("handler ran %d times after Stop returned", lateCalls)
	}
}

func TestServeRefusesBadEndpoint(t *testing.T) {
	srv := startServer(t)
	c := connect(t, srv.URL(), bus.ConnOptions{})
	if _, err := c.Serve(bus.ServiceConfig{Name: "bad name!", Version: "1.0.0"}); err == nil {
		t.Error("service with an invalid name registered")
	}
	if _, err := c.Serve(bus.ServiceConfig{Name: "svc", Version: "1.0.0", Endpoints: []bus.Endpoint{
		{Name: "e", Subject: "bad subject with spaces", Handler: func(context.Context, []byte, nats.Header) (any, error) { return nil, nil }},
	}}); err == nil {
		t.Error("endpoint with an invalid subject registered")
	}
}

func TestServiceDiscoverable(t *testing.T) {
	_, c := serveTest(t)
	// micro's PING/INFO answer for the service (what `nats micro ls` shows).
	m, err := c.Conn.Request("$SRV.INFO.bus-test", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "bus-test" || info.Version != "1.0.0" || len(info.Endpoints) != 6 {
		t.Errorf("info %+v", info)
	}
	for _, ep := range info.Endpoints {
		if ep.QueueGroup != "" {
			t.Errorf("endpoint %s in queue group %q; each instance must answer for its own node", ep.Name, ep.QueueGroup)
		}
	}
}

func TestReplyError(t *testing.T) {
	tests := []struct {
		name     string
		msg      *nats.Msg
		wantCode schema.Code
	}{
		{"plain reply", &nats.Msg{Data: []byte(`{"type":"io.restartcoord.v1.health"}`)}, ""},
		{"envelope", &nats.Msg{Data: []byte(`{"type":"io.restartcoord.v1.error","error":{"code":"NOT_FOUND","message":"no"}}`)}, schema.CodeNotFound},
		{"header only", &nats.Msg{Data: nil, Header: nats.Header{micro.ErrorHeader: []string{"boom"}, micro.ErrorCodeHeader: []string{"500"}}}, schema.CodeInternal},
		{"empty", &nats.Msg{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := bus.ReplyError(tc.msg)
			if ok != (tc.wantCode != "") {
				t.Fatalf("ReplyError = %v, %v", e, ok)
			}
			if ok && e.Code != tc.wantCode {
				t.Errorf("code %s, want %s", e.Code, tc.wantCode)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"timeout", fmt.Errorf("%w: x", bus.ErrTimeout), true},
		{"no responders", fmt.Errorf("%w on x", bus.ErrNoResponders), true},
		{"contract error", schema.Invalid("x", "bad"), false},
		{"wrapped contract error", fmt.Errorf("call: %w", schema.Errorf(schema.CodeNotLeader, "no")), false},
		{"closed", nats.ErrConnectionClosed, false},
		{"cancelled", context.Canceled, false},
		{"permission", fmt.Errorf("%w: x", bus.ErrPermissionDenied), false},
		{"js wrong sequence", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{"js unavailable", &jetstream.APIError{Code: 503}, true},
		{"other", errors.New("connection reset"), true},
	}
	for _, tc := range tests {
		if got := bus.Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
