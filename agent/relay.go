package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tollgate-db/tollgate/events"
)

// ClientBuffer is what the client loop reads into; a message longer than
// it grows the buffer for as long as it is read, then it shrinks back.
const ClientBuffer = 32 << 10

// serverBuffer is what the server loop reads into: the database's bytes
// go to the client in the chunks they arrive in.
const serverBuffer = 64 << 10

// Codec is what a relay needs of an engine's protocol.
type Codec interface {
	// Decode handles the complete client messages at the start of b: it
	// decodes their events, gates them (Relay.Gate) and forwards what may
	// go (Relay.Send), or refuses them in the protocol's own form. It
	// returns how many bytes it consumed and, when the next message is
	// incomplete, how many bytes that message needs at least, counted
	// from its start. A *Malformed closes the session (nothing of the bad
	// message is forwarded), a *ClientEnded ends it in order.
	Decode(ctx context.Context, b []byte) (consumed, need int, err error)
	// ClientClosed is what the client's read error err means with rest,
	// the bytes of an unfinished message, read: a *Malformed (a truncated
	// message) or nil for a client that left.
	ClientClosed(err error, rest []byte) *Malformed
	// Scan follows one read of the server stream: out is what the client
	// gets of it (b itself, unless the engine replaces part of it),
	// answers how many answers to forwarded commands it completed. A
	// *Malformed closes the session; ErrClientLost says the engine wrote
	// out itself and the client was gone.
	Scan(b []byte) (out []byte, answers uint64, err error)
	Terminator
}

// Terminator renders the end of a session in a protocol.
type Terminator interface {
	// Termination renders the error a session ended by the agent
	// (Relay.Terminate) shows its client, once the server stream stopped;
	// nil when the client's stream stands inside a message of the
	// server's, where nothing may be added.
	Termination(reason, message string) []byte
}

// Answers is the relay's view of the pending-command queue (Pending):
// the server loop counts answers delivered, refusals wait for them.
type Answers interface {
	Answered(n uint64)
	WaitIdle()
	Close()
}

// ErrClientLost is returned by Codec.Scan when the engine wrote to the
// client itself and could not.
var ErrClientLost = errors.New("client connection lost")

// ClientEnded ends a session in order: the client said it was done.
type ClientEnded struct{ Reason string }

func (e *ClientEnded) Error() string { return e.Reason }

// Malformed is input that did not decode, from either side. It is never
// forwarded: the event is recorded (gated for the client's, queued for
// the server's), the session ends with Ending as its reason and the client
// reads Reply last.
type Malformed struct {
	Event  *events.MalformedPacket
	Ending string
	// Reply, when not nil, is written to the client, after the server's
	// answers to what was forwarded before when Wait is set.
	Reply []byte
	Wait  bool
	// Err is what the session ends with; the Malformed itself when nil.
	Err error
}

func (m *Malformed) Error() string {
	if m.Err != nil {
		return m.Err.Error()
	}
	return m.Event.Reason
}

func (m *Malformed) Unwrap() error { return m.Err }

// Segment is a byte range of a client batch to forward.
type Segment struct{ From, To int }

// Relay is a proxied session's byte relay, which every engine shares: the
// client loop reads into a buffer that grows for long messages and hands
// complete ones to the codec, which gates their events before forwarding;
// the server loop forwards the database's bytes as they arrive, after the
// codec followed them; malformed input of either side closes the session;
// the agent's own replies never overtake the server's; and a session ended
// by the agent tells its client why between two messages.
type Relay struct {
	Tally
	Sess   *Session
	Client net.Conn
	Server net.Conn
	Codec  Codec
	// Queue, when set, is waited on before a refusal is written and
	// closed when the server stream stops.
	Queue Answers
	// ResetWithServer resets the client's connection when the
	// database reset its own, so that the client sees what it would
	// directly (MariaDB's wait_timeout).
	ResetWithServer bool

	clientMu sync.Mutex // serialises writes to the client
	stopped  atomic.Bool

	termMu           sync.Mutex
	terminated       bool
	termReason, term string
}

// WriteClient writes b to the client, between the other writes.
func (r *Relay) WriteClient(b []byte) error {
	r.clientMu.Lock()
	defer r.clientMu.Unlock()
	_, err := r.Client.Write(b)
	return err
}

// Stop keeps everything the client sends from now on from the database:
// the session is being ended.
func (r *Relay) Stop() { r.stopped.Store(true) }

// Stopped reports whether Stop was called.
func (r *Relay) Stopped() bool { return r.stopped.Load() }

// Terminate ends the session for the lifecycle (a lock, the end of a
// certificate or grant, idleness): closing the database side stops the
// server stream first, so that the client's last message, rendered by
// the engine's Terminator, never lands inside one of the database's.
func (r *Relay) Terminate(reason, message string) {
	r.Tally.SetReason(reason)
	r.termMu.Lock()
	r.terminated, r.termReason, r.term = true, reason, message
	r.termMu.Unlock()
	r.Server.Close()
}

// sendTermination writes Terminate's error, when there is one. Only after
// the server loop returned.
func (r *Relay) sendTermination(t Terminator) {
	r.termMu.Lock()
	ok, reason, msg := r.terminated, r.termReason, r.term
	r.termMu.Unlock()
	if !ok {
		return
	}
	if b := t.Termination(reason, msg); b != nil {
		_ = r.WriteClient(b)
	}
}

// Run relays until either side ends, then closes the session: first is
// client input read before (decoded before anything else), server the
// database's stream.
func (r *Relay) Run(ctx context.Context, first []byte, server io.Reader) error {
	return r.RunWith(ctx, r.Codec,
		func(ctx context.Context) error { return r.clientLoop(ctx, first) },
		func() error { return r.serverLoop(server) })
}

// RunWith is Run for an engine with loops of its own, framed by whole
// messages rather than by reads (they end with Fail); t renders a
// termination.
func (r *Relay) RunWith(ctx context.Context, t Terminator, clientLoop func(context.Context) error, serverLoop func() error) error {
	return RunLoops(ctx, &r.Tally, r.Sess, r.Client, r.Server, clientLoop, func() error {
		err := serverLoop()
		if r.Queue != nil {
			r.Queue.Close()
		}
		r.sendTermination(t)
		return err
	})
}

// clientLoop hands each read's complete messages to the codec. The bytes
// of an incomplete one move to the buffer's start; a message longer than
// the buffer grows it for as long as it is read.
func (r *Relay) clientLoop(ctx context.Context, first []byte) error {
	buf := make([]byte, max(ClientBuffer, len(first)))
	w := copy(buf, first)
	n := w
	r.Tally.BytesIn.Add(uint64(w))
	var rerr error
	for {
		if n > 0 {
			consumed, need, err := r.Codec.Decode(ctx, buf[:w])
			if err != nil {
				return r.Fail(ctx, err)
			}
			w = copy(buf, buf[consumed:w])
			switch {
			case need > len(buf):
				nb := make([]byte, need)
				copy(nb, buf[:w])
				buf = nb
			case len(buf) > ClientBuffer && w <= ClientBuffer && need <= ClientBuffer:
				nb := make([]byte, ClientBuffer)
				copy(nb, buf[:w])
				buf = nb
			}
			if w == len(buf) {
				// A message whose length is not known before its end.
				buf = append(buf, make([]byte, len(buf))...)
			}
		}
		if rerr != nil {
			if m := r.Codec.ClientClosed(rerr, buf[:w]); m != nil {
				return r.malformed(ctx, m)
			}
			r.Tally.SetReason("client closed the connection")
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, net.ErrClosed) {
				return nil
			}
			return rerr
		}
		n, rerr = r.Client.Read(buf[w:])
		w += n
		r.Tally.BytesIn.Add(uint64(n))
	}
}

// Fail ends a loop for err: malformed input (of either side) is recorded
// and answered, a client that said it was done ends the session in order.
func (r *Relay) Fail(ctx context.Context, err error) error {
	var m *Malformed
	if errors.As(err, &m) {
		return r.malformed(ctx, m)
	}
	var end *ClientEnded
	if errors.As(err, &end) {
		r.Tally.SetReason(end.Reason)
		return nil
	}
	return err
}

// malformed records bad input and closes: nothing of it is forwarded.
func (r *Relay) malformed(ctx context.Context, m *Malformed) error {
	if m.Event.Direction == "server" {
		_ = r.Sess.Emit(m.Event)
	} else {
		_ = r.Sess.Gate(ctx, m.Event)
	}
	r.Tally.SetReason(m.Ending)
	if m.Reply != nil {
		if m.Wait && r.Queue != nil {
			r.Queue.WaitIdle()
		}
		_ = r.WriteClient(m.Reply)
	}
	if m.Err != nil {
		return m.Err
	}
	return m
}

// Gate records the events of a client batch: nil once they are stored
// (strict) or queued (async), and the batch may be forwarded; an
// *AuditError when the store did not take them, and the engine refuses
// the batch in its protocol's form.
func (r *Relay) Gate(ctx context.Context, evs ...events.Event) (*AuditError, error) {
	err := r.Sess.Gate(ctx, evs...)
	if err == nil {
		return nil, nil
	}
	var ae *AuditError
	if errors.As(err, &ae) {
		return ae, nil
	}
	return nil, err
}

// Send forwards the segments of b to the database. It reports false when
// the database connection is gone, which ends the session.
func (r *Relay) Send(b []byte, segs []Segment) bool {
	for _, s := range segs {
		if _, err := r.Server.Write(b[s.From:s.To]); err != nil {
			r.Tally.SetReason("database connection lost")
			return false
		}
	}
	return true
}

// Refusal waits until the server answered everything forwarded before
// the agent answers a refused batch itself.
func (r *Relay) Refusal() {
	if r.Queue != nil {
		r.Queue.WaitIdle()
	}
}

// serverLoop forwards the database's bytes to the client in the chunks
// they arrive in, once the codec followed them.
func (r *Relay) serverLoop(src io.Reader) error {
	buf := make([]byte, serverBuffer)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			out, answers, serr := r.Codec.Scan(buf[:n])
			if serr != nil {
				if errors.Is(serr, ErrClientLost) {
					r.Tally.SetReason("client connection lost")
					return nil
				}
				return r.Fail(context.Background(), serr)
			}
			if len(out) > 0 {
				if werr := r.WriteClient(out); werr != nil {
					r.Tally.SetReason("client connection lost")
					return nil
				}
			}
			r.Tally.BytesOut.Add(uint64(n))
			if answers > 0 && r.Queue != nil {
				r.Queue.Answered(answers)
			}
		}
		if err != nil {
			r.Tally.SetReason("database closed the connection")
			if r.ResetWithServer && errors.Is(err, syscall.ECONNRESET) {
				if c, ok := r.Client.(*ClientConn); ok {
					c.ResetOnClose()
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
