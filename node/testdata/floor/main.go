// Command floor is the process half of the restart floor that
// node's BenchmarkRestartFloor measures: it starts, connects to NATS the way
// a worker does (bus.Connect), says "connected" on stdout and exits. It
// links the same bus package (and so nats-server) as the worker, so its
// start-up cost is comparable. The benchmark builds it into a temporary
// directory with `go build`.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/restartcoord/restartcoord/bus"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, bus.ConnOptions{URL: os.Getenv("FLOOR_NATS_URL"), Name: "restartcoord-floor"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Println("connected")
	conn.Close()
}
