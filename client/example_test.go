package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/client"
	"github.com/restartcoord/restartcoord/schema"
)

// A client of node-1 creates a task with a job and reads it back. If node-1
// restarts in between, the calls wait in the node's request buffer and are
// answered once it is back: nothing here handles restarts.
func Example() {
	nc, err := nats.Connect(nats.DefaultURL, nats.MaxReconnects(-1))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	c, err := client.New(nc, "billing-7", "node-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	task, err := c.CreateTask(ctx, schema.TaskCreateArgs{
		Title: "nightly export",
		Job:   &schema.Job{Kind: schema.JobKindSteps, Steps: 10, StepSeconds: 1},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	got, err := c.GetTask(ctx, task.TaskID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.Status, got.StepsDone)
}
