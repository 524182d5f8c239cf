package agent

import (
	"context"
	"net"
	"testing"

	"github.com/tollgate-db/tollgate/events"
)

// Cancelling the context ends both loops, and the session's last event
// says the agent shut it down.
func TestRunLoopsEndsBothSidesOnShutdown(t *testing.T) {
	rec := &fakeRecorder{}
	sess := testSession(t, rec, "strict")
	client, clientPeer := net.Pipe()
	server, serverPeer := net.Pipe()
	defer clientPeer.Close()
	defer serverPeer.Close()
	readUntilClosed := func(c net.Conn) error {
		_, err := c.Read(make([]byte, 1))
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &Tally{}
	tl.Statements.Add(2)
	done := make(chan error, 1)
	go func() {
		done <- RunLoops(ctx, tl, sess, client, server,
			func(context.Context) error { return readUntilClosed(client) },
			func() error { return readUntilClosed(server) })
	}()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("RunLoops returned nil, want the client loop's read error")
	}
	<-sess.Close(nil)
	evs := rec.all()
	if len(evs) == 0 {
		t.Fatal("no event stored")
	}
	end, ok := evs[len(evs)-1].(*events.SessionEnd)
	if !ok {
		t.Fatalf("last event %T, want *events.SessionEnd", evs[len(evs)-1])
	}
	if end.Reason != "agent shutting down" || end.Statements != 2 {
		t.Fatalf("end reason %q, statements %d; want agent shutting down, 2", end.Reason, end.Statements)
	}
}
