// Command restartcoord is one binary with many verbs: dev, demo, node, init
// and the operator verbs that drive nodes over NATS.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/restartcoord/restartcoord/node"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "0.1.0-dev"

// Exit codes of CONTRACT.md.
const (
	exitOK     = 0
	exitFailed = 1 // the operation ran and failed
	exitUsage  = 2 // bad usage or a refused request
	exitNoNATS = 3 // NATS unreachable or the request timed out
)

func main() {
	if node.IsWorker() {
		os.Exit(node.RunWorker())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

type verb struct {
	name, usage string
	run         func(ctx context.Context, args []string) error
}

func verbs() []verb {
	v := []verb{
		{"dev", "run embedded NATS and N nodes on this machine", runDev},
		{"demo", "run the scripted restart scenario and print its table", runDemo},
		{"node", "run one node (supervisor + worker) against a NATS server", runNode},
		{"coordinator", "run a coordinator (rolls, escalation); run two or three, one leads", runCoordinator},
		{"nats", "run a NATS server (JetStream) from a nats-server config file", runNats},
		{"init", "create the streams, buckets and object store in NATS", runInit},
	}
	return append(v, operatorVerbs()...)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Println("restartcoord", version)
		return exitOK
	}
	for _, v := range verbs() {
		if v.name == args[0] {
			return exitCode(v.run(ctx, args[1:]))
		}
	}
	fmt.Fprintf(os.Stderr, "restartcoord: unknown verb %q\n\n", args[0])
	usage(os.Stderr)
	return exitUsage
}

func usage(w *os.File) {
	fmt.Fprintf(w, "usage: restartcoord <verb> [flags] [args]\n\nverbs:\n")
	for _, v := range verbs() {
		fmt.Fprintf(w, "  %-15s %s\n", v.name, v.usage)
	}
	fmt.Fprintf(w, "\nNATS is found as natscli finds it: --server/-s, else $NATS_URL, else nats://127.0.0.1:4222.\n")
	fmt.Fprintf(w, "Exit codes: 0 ok, 1 operation failed, 2 bad usage or refused, 3 NATS unreachable or timed out.\n")
}

// exitError carries an exit code (and a hint) up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var silent *silentExit
	if errors.As(err, &silent) {
		return silent.code
	}
	fmt.Fprintln(os.Stderr, "restartcoord:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return classify(err)
}

// silentExit ends with a code after the verb has printed what it had to.
type silentExit struct{ code int }

func (s *silentExit) Error() string { return fmt.Sprintf("exit %d", s.code) }
