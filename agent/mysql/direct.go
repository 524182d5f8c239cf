package mysql

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// ListenerOptions configures Engine.Listener.
type ListenerOptions struct {
	// Cluster and Recorder record refusals that happen before TLS (a
	// client that would log in without TLS): the agent's Server has not
	// seen these connections yet. Without a Recorder they are only
	// refused.
	Cluster  string
	Recorder agent.Recorder
	// Database, when set, names the database in those events.
	Database *agent.Database
}

// Listener wraps a listener for MySQL clients that connect to the agent
// directly (mariadb --ssl-cert ..., go-sql-driver with TLS, sysbench
// --mysql-ssl=on). A MySQL client says nothing until the server greets it,
// so on such a port the agent greets first, in plaintext, offering only
// TLS; the client's SSLRequest is read here, and from its ClientHello on
// the connection is the agent's like any other: pass the returned listener
// to agent.Server.Serve, which terminates TLS, checks the user certificate
// and routes by SNI (or to the only database) to this engine, which then
// reads the client's handshake response inside TLS.
//
// A client that answers the greeting without asking for TLS gets ERR 3159
// and is recorded as a malformed_packet event; nothing is forwarded.
func (e *Engine) Listener(ln net.Listener, o ListenerOptions) net.Listener {
	return &directListener{Listener: ln, e: e, o: o}
}

type directListener struct {
	net.Listener
	e *Engine
	o ListenerOptions
}

func (l *directListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &directConn{Conn: c, l: l, key: connKey(c.LocalAddr().String(), c.RemoteAddr().String())}, nil
}

func connKey(local, remote string) string { return local + "|" + remote }

// Protocol tells the agent's server that this port serves MySQL only
// (agent.ProtocolConn).
func (c *directConn) Protocol() string { return protocol.MySQL }

// directConn runs the plaintext part of the connection phase on its first
// Read, which the agent's server makes (under its handshake deadline) to
// see how the connection starts.
type directConn struct {
	net.Conn
	l    *directListener
	key  string
	once sync.Once
	err  error
}

func (c *directConn) Read(p []byte) (int, error) {
	c.once.Do(func() { c.err = c.greet() })
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// NetConn is the accepted connection, for agent.ClientConn.ResetOnClose.
func (c *directConn) NetConn() net.Conn { return c.Conn }

func (c *directConn) Close() error {
	c.l.e.mu.Lock()
	delete(c.l.e.direct, c.key)
	c.l.e.mu.Unlock()
	return c.Conn.Close()
}

var errNoTLS = errors.New("the client answered the greeting without asking for TLS")

func (c *directConn) greet() error {
	e := c.l.e
	g, hs := e.newGreeting(e.versionFor(c.l.o.Database), true)
	w := wire.NewWriter(c.Conn)
	if err := w.WritePacket(hs); err != nil {
		return err
	}
	r := wire.NewReader(c.Conn, maxHandshake)
	r.SetSeq(1)
	p, err := r.ReadPacket()
	if err != nil {
		if errors.Is(err, wire.ErrPacketTooLarge) || errors.Is(err, wire.ErrSequence) {
			c.refuse(w, r, codeMalformed, stateMalformed, "tollgate: malformed handshake response: "+err.Error(), "handshake response: "+err.Error(), nil, "")
		}
		return err
	}
	if !wire.IsSSLRequest(p) {
		user := ""
		var hr wire.HandshakeResponse41
		if hr.Decode(p) == nil {
			user = hr.Username
		}
		// The handshake response may carry a password scramble: only its
		// length is recorded.
		c.refuse(w, r, codeInsecure, stateInsecure,
			"tollgate: connections without TLS are refused: connect with TLS and a Tollgate client certificate (--ssl-cert/--ssl-key, or through tg proxy db)",
			"handshake response without SSLRequest on a port that requires TLS", p, user)
		return errNoTLS
	}
	var req wire.SSLRequest
	if err := req.Decode(p); err != nil {
		c.refuse(w, r, codeMalformed, stateMalformed, "tollgate: malformed SSLRequest: "+err.Error(), "SSLRequest: "+err.Error(), nil, "")
		return err
	}
	g.nextSeq = 2
	e.mu.Lock()
	e.direct[c.key] = g
	e.mu.Unlock()
	return nil
}

func (c *directConn) refuse(w *wire.Writer, r *wire.Reader, code uint16, state, msg, reason string, p []byte, user string) {
	if o := c.l.o; o.Recorder != nil {
		s := agent.NewSession(agent.SessionOptions{Cluster: o.Cluster, Recorder: o.Recorder, Database: o.Database, DBUser: user})
		ev := &events.MalformedPacket{Direction: "client", Reason: reason, Length: int64(len(p))}
		_ = s.Gate(context.Background(), ev)
		<-s.Close(nil)
	}
	w.SetSeq(r.Seq())
	_ = w.WritePacket((&wire.ErrPacket{Code: code, SQLState: state, Message: msg}).Encode(nil, wire.ClientProtocol41))
}

// takeDirect returns (and forgets) the greeting a direct client received
// before TLS, or nil for a client that came over TLS from the start.
func (e *Engine) takeDirect(local, remote string) *greeting {
	k := connKey(local, remote)
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.direct[k]
	delete(e.direct, k)
	return g
}
