package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/restartcoord/restartcoord/schema"
)

// AlertConsumer is the durable consumer of ORCH_ALERTS that alert delivery
// reads (on the coordinator leader): its position survives leaders, so an
// alert a leader did not finish is read again by the next one.
const AlertConsumer = "alert-delivery"

// alertConsumerConfig: every alert, in order, acknowledged one by one; one
// not acknowledged within AckWait (a leader died holding it) is delivered
// again.
func alertConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Durable: AlertConsumer, Description: "alert delivery (coordinator leader)",
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second,
		MaxAckPending: 1000, MaxDeliver: -1}
}

// AlertsConsumer returns the delivery consumer, creating it when missing
// (Init creates it; a store made before it existed gets it here).
func AlertsConsumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, schema.StreamAlerts, alertConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("bus: alert delivery consumer: %w", err)
	}
	return c, nil
}
