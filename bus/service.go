package bus

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/restartcoord/restartcoord/schema"
)

// Handler answers one request: a value marshalled as the reply, or an error
// (a *schema.Error keeps its code; anything else is INTERNAL).
type Handler func(ctx context.Context, data []byte, hdr nats.Header) (any, error)

type subjectKey struct{}

// Subject is the subject a handler's request arrived on (for endpoints
// with wildcards).
func Subject(ctx context.Context) string {
	s, _ := ctx.Value(subjectKey{}).(string)
	return s
}

// Endpoint is one subject of a service.
type Endpoint struct {
	Name    string
	Subject string
	Handler Handler
}

// ServiceConfig describes a micro service instance.
type ServiceConfig struct {
	Name        string
	Version     string
	Description string
	Metadata    map[string]string
	Endpoints   []Endpoint
	// Shared: the instances of this service share each subject and one of
	// them takes each request (a queue group). Otherwise every instance
	// gets every request (node endpoints are each on their own subject).
	Shared bool
}

// Service is a registered micro service.
type Service struct {
	svc    micro.Service
	conn   *Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	stopped bool
}

// begin admits a request unless the service is stopping.
func (s *Service) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	return true
}

// Serve registers a micro service whose endpoints answer with the contract's
// envelope. Each request is handled on its own goroutine, so a long one (a
// restart) never delays another (a health check, or a second restart that
// must be told RESTART_IN_PROGRESS).
func (c *Conn) Serve(cfg ServiceConfig) (*Service, error) {
	svc, err := micro.AddService(c.Conn, micro.Config{Name: cfg.Name, Version: cfg.Version,
		Description: cfg.Description, Metadata: cfg.Metadata})
	if err != nil {
		return nil, fmt.Errorf("bus: add service %s: %w", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{svc: svc, conn: c, ctx: ctx, cancel: cancel}
	for _, ep := range cfg.Endpoints {
		h := ep.Handler
		err := svc.AddEndpoint(ep.Name, micro.HandlerFunc(func(req micro.Request) {
			if !s.begin() {
				_ = replyValue(c, req, nil, schema.Errorf(schema.CodeSystemNotReady, "service stopping"))
				return
			}
			go func() {
				defer s.wg.Done()
				defer func() {
					// A handler's panic answers INTERNAL; it never takes the process down.
					if p := recover(); p != nil {
						_ = replyValue(c, req, nil, schema.Errorf(schema.CodeInternal, "handler panic: %v", p))
					}
				}()
				v, err := h(context.WithValue(ctx, subjectKey{}, req.Subject()), req.Data(), nats.Header(req.Headers()))
				_ = replyValue(c, req, v, err)
			}()
		}), endpointOpts(cfg, ep)...)
		if err != nil {
			_ = svc.Stop()
			cancel()
			return nil, fmt.Errorf("bus: add endpoint %s: %w", ep.Subject, err)
		}
	}
	// Endpoints answer only once the server has the subscriptions.
	if err := c.Flush(); err != nil {
		_ = svc.Stop()
		cancel()
		return nil, err
	}
	return s, nil
}

func endpointOpts(cfg ServiceConfig, ep Endpoint) []micro.EndpointOpt {
	opts := []micro.EndpointOpt{micro.WithEndpointSubject(ep.Subject)}
	if cfg.Shared {
		return append(opts, micro.WithEndpointQueueGroup("orch-"+cfg.Name))
	}
	return append(opts, micro.WithEndpointQueueGroupDisabled())
}

// Stop unregisters the service, cancels the handlers' context and waits
// for the handlers still running.
func (s *Service) Stop() error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	err := s.svc.Stop()
	// micro drains its subscriptions asynchronously: make sure the server
	// has the unsubscribes before waiting for the handlers.
	_ = s.conn.Flush()
	s.cancel()
	s.wg.Wait()
	return err
}
