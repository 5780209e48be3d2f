package bus

import "context"

// Open connects to NATS, opens the JetStream store and checks that every
// stream, bucket and object store exists with the expected settings: what
// every long-running component does first. On error nothing stays open.
func Open(ctx context.Context, o ConnOptions) (*Store, error) {
	conn, err := Connect(ctx, o)
	if err != nil {
		return nil, err
	}
	s, err := NewStore(conn)
	if err == nil {
		err = Check(ctx, s.JetStream())
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}
