package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/restartcoord/restartcoord/bus"
	"github.com/restartcoord/restartcoord/schema"
)

// connFlags are natscli's connection flags.
type connFlags struct {
	server, creds, user, password string
	timeout                       time.Duration
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "NATS server URL(s) (else $NATS_URL, else "+bus.DefaultURL+")")
	fs.StringVar(&c.server, "s", "", "shorthand for --server")
	fs.StringVar(&c.creds, "creds", "", "NATS credentials file")
	fs.StringVar(&c.user, "user", "", "NATS user")
	fs.StringVar(&c.password, "password", "", "NATS password")
	fs.DurationVar(&c.timeout, "timeout", 0, "how long to wait for the reply (default depends on the verb)")
}

func (c *connFlags) options(name string) bus.ConnOptions {
	return bus.ConnOptions{URL: bus.ResolveURL(c.server), Creds: c.creds, User: c.user, Password: c.password, Name: name}
}

// connect dials NATS for an operator verb: it fails fast (exit 3).
func (c *connFlags) connect(ctx context.Context, name string) (*bus.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := bus.Connect(cctx, c.options(name))
	if err != nil {
		return nil, &exitError{code: exitNoNATS, err: err}
	}
	return conn, nil
}

// newFlags makes a FlagSet whose errors are returned, not printed and exited.
func newFlags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	_ = usage
	return fs
}

// parse parses flags anywhere among the arguments (natscli style:
// `restartcoord restart node-1 --json`) and returns the positional ones.
func parse(fs *flag.FlagSet, args []string, usage string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printUsage(fs, usage)
				return nil, &silentExit{code: exitOK}
			}
			return nil, usageErr("%v (usage: %s)", err, usage)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func printUsage(fs *flag.FlagSet, usage string) {
	fmt.Fprintf(os.Stdout, "usage: %s\n\nflags:\n", usage)
	fs.SetOutput(os.Stdout)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// classify maps an error to an exit code: refusals by the node are 2, a
// failed operation 1, NATS trouble 3.
func classify(err error) int {
	var se *schema.Error
	var ce *bus.ConnectError
	switch {
	case errors.As(err, &ce), errors.Is(err, bus.ErrTimeout), errors.Is(err, bus.ErrNoResponders),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, bus.ErrPermissionDenied), errors.Is(err, bus.ErrStoreMissing):
		return exitNoNATS
	case errors.As(err, &se):
		switch se.Code {
		case schema.CodeProcessFailed, schema.CodeStateCorruption, schema.CodeInternal, schema.CodeTimeoutExceeded:
			return exitFailed
		}
		return exitUsage
	}
	return exitFailed
}

// nodeArg checks the one positional NODE argument.
func nodeArg(pos []string, usage string) (string, error) {
	if len(pos) != 1 {
		return "", usageErr("expected one NODE argument, got %d (usage: %s)", len(pos), usage)
	}
	if !schema.ValidToken(pos[0]) {
		return "", usageErr("node id %q: must be 1..64 letters, digits, '-' or '_'", pos[0])
	}
	return pos[0], nil
}

func hint(err error) error {
	if errors.Is(err, bus.ErrNoResponders) {
		return fmt.Errorf("%w (is the node running? `restartcoord dev` starts node-1..node-3)", err)
	}
	if strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("%w (is NATS running? `restartcoord dev` starts one on 127.0.0.1:4222)", err)
	}
	return err
}
