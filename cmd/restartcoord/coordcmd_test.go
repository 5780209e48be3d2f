package main

import (
	"errors"
	"net"
	"testing"
)

// --http takes HOST:PORT and nothing else; a bad one is a usage error
// (exit 2) before anything starts, a taken port a plain failure (exit 1).
func TestListenHTTP(t *testing.T) {
	for _, c := range []struct {
		addr string
		code int // 0: listens
	}{
		{"127.0.0.1:0", 0},
		{"localhost:0", 0},
		{"8080", exitUsage},
		{"127.0.0.1", exitUsage},
		{"127.0.0.1:http", exitUsage},
		{"127.0.0.1:70000", exitUsage},
		{"127.0.0.1:-1", exitUsage},
		{"bad host!:8080", exitUsage},
		{"http://127.0.0.1:8080", exitUsage},
	} {
		t.Run(c.addr, func(t *testing.T) {
			ln, err := listenHTTP(c.addr)
			if ln != nil {
				ln.Close()
			}
			if got := exitCode(err); got != c.code {
				t.Errorf("listenHTTP(%q) = %v (exit %d), want exit %d", c.addr, err, got, c.code)
			}
		})
	}
	t.Run("taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, err = listenHTTP(ln.Addr().String())
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			t.Errorf("listenHTTP on a taken port = %v, want a plain error (exit 1)", err)
		}
	})
}
