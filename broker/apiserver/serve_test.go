package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// A listener closed by its owner as the shutdown begins (the proxy's
// handoff ends with the same context) is a clean stop; closed while the
// context is alive, it is an error.
func TestServeListenerClosedAtShutdown(t *testing.T) {
	for _, shutdown := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- New(nil, nil, nil, nil).Serve(ctx, ln, &tls.Config{}) }()
		time.Sleep(50 * time.Millisecond)
		if shutdown {
			cancel()
		}
		ln.Close()
		select {
		case err := <-done:
			if shutdown && err != nil {
				t.Fatalf("at shutdown: %v", err)
			}
			if !shutdown && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("listener closed while serving: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return")
		}
		cancel()
	}
}
