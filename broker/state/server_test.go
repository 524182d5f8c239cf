package state

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// jsServer is an embedded JetStream server storing in a temp dir, with the
// streams created.
type jsServer struct {
	dir string
	srv *server.Server
}

func startServer(tb testing.TB, dir string) *jsServer {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		tb.Fatal("nats server not ready within 10s")
	}
	s := &jsServer{dir: dir, srv: srv}
	tb.Cleanup(s.stop)
	js := s.connect(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *jsServer) stop() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// connect opens a new in-process connection, closed at the end of the test.
func (s *jsServer) connect(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(s.srv))
	if err != nil {
		tb.Fatalf("in-process connection: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// open opens a Store on a connection of its own.
func (s *jsServer) open(tb testing.TB) *Store {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	st, err := Open(ctx, s.connect(tb), "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	return st
}
