package events

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testStore is an embedded JetStream server with the streams created and an
// in-process connection to it.
type testStore struct {
	dir  string
	port int
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
}

// startStore starts a JetStream server storing in dir, listening on a free
// loopback port, with an in-process connection to it.
func startStore(tb testing.TB, dir string) *testStore {
	tb.Helper()
	s := &testStore{dir: dir, srv: runServer(tb, dir, server.RANDOM_PORT)}
	nc, err := nats.Connect("", nats.InProcessServer(s.srv))
	if err != nil {
		s.srv.Shutdown()
		tb.Fatalf("in-process connection: %v", err)
	}
	s.connected(tb, nc)
	return s
}

// startTCPStore is startStore with a TCP connection that reconnects
// forever, for tests that stop and restart the server under a publisher.
func startTCPStore(tb testing.TB, dir string) *testStore {
	tb.Helper()
	s := &testStore{dir: dir, srv: runServer(tb, dir, server.RANDOM_PORT)}
	nc, err := nats.Connect(s.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		s.srv.Shutdown()
		tb.Fatalf("connection: %v", err)
	}
	s.connected(tb, nc)
	return s
}

func runServer(tb testing.TB, dir string, port int) *server.Server {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
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
	return srv
}

func (s *testStore) connected(tb testing.TB, nc *nats.Conn) {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	s.nc, s.js = nc, js
	s.port = s.srv.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.shutdown)
}

// stopServer shuts the server down and leaves the connection reconnecting.
func (s *testStore) stopServer() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// restartServer starts the server again on the same port and store and
// waits until the connection is back.
func (s *testStore) restartServer(tb testing.TB) {
	tb.Helper()
	s.srv = runServer(tb, s.dir, s.port)
	deadline := time.Now().Add(10 * time.Second)
	for !s.nc.IsConnected() {
		if time.Now().After(deadline) {
			tb.Fatal("client did not reconnect within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *testStore) shutdown() {
	s.nc.Close()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// streamMsgs is the number of messages in the AUDIT stream.
func (s *testStore) streamMsgs(tb testing.TB) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// stored reads every message of the AUDIT stream, in order, decoded.
func (s *testStore) stored(tb testing.TB) []*Frame {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var out []*Frame
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("seq %d: %v", seq, err)
		}
		f, err := DecodeFrame(m.Data)
		if err != nil {
			tb.Fatalf("seq %d: %v", seq, err)
		}
		out = append(out, f)
	}
	return out
}

// storedEvents is every event of the AUDIT stream, in stream order.
func (s *testStore) storedEvents(tb testing.TB) [][]byte {
	tb.Helper()
	var evs [][]byte
	for _, f := range s.stored(tb) {
		evs = append(evs, f.Events...)
	}
	return evs
}

// queryEvent is a db.session.query of 400 bytes encoded (with a 26-byte
// session id and a 5-letter cluster), the event size of DESIGN.md's budget.
func queryEvent(sid string, ei uint64) *Query {
	return &Query{
		Session:  Session{SID: sid, EI: ei},
		Database: Database{Service: "pg-main", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"},
		Query:    benchQuery,
	}
}

// benchQuery is a 100-byte statement; the envelope makes up the rest.
const benchQuery = "SELECT id, total, status FROM orders WHERE customer_id = $1 AND created_at >= $2 ORDER BY id LIMIT 50"
