package agent

import (
	"context"
	"io"
)

// RunLoops runs a proxied session's two directions to their end and closes
// its audit session with the tally's end event. serverLoop (with whatever
// it must still tell the client once the database stream stopped) runs in
// its own goroutine; when it returns the client connection is closed, which
// unblocks clientLoop. When clientLoop returns the server connection is
// closed, which ends serverLoop. Cancelling ctx closes both, recording
// "agent shutting down". The client loop's error wins over the server's.
func RunLoops(ctx context.Context, t *Tally, sess *Session, client, server io.Closer, clientLoop func(context.Context) error, serverLoop func() error) error {
	serverDone := make(chan error, 1)
	go func() {
		err := serverLoop()
		// Unblock the client loop.
		client.Close()
		serverDone <- err
	}()
	stop := context.AfterFunc(ctx, func() {
		t.SetReason("agent shutting down")
		server.Close()
		client.Close()
	})
	defer stop()
	cerr := clientLoop(ctx)
	server.Close()
	serr := <-serverDone
	// The session's last events are stored in the background; the server
	// waits for them at shutdown.
	sess.Close(t.End("client closed the connection"))
	if cerr != nil {
		return cerr
	}
	return serr
}
