package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Options configure Listen.
type Options struct {
	// Addrs are the proxies (host:port); the agent keeps a tunnel to each.
	Addrs []string
	// TLS holds the agent's host certificate (Certificates) and the host
	// CA that verifies the proxy (RootCAs). ServerName defaults to the
	// host of each address; NextProtos is set to ALPN.
	TLS *tls.Config
	// HostID and Databases are said in the Hello.
	HostID    string
	Databases []string
	Log       *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between two dials of one
	// proxy (defaults 250 ms and 30 s); it doubles after each failure and
	// is jittered, so agents cut off together do not come back together.
	MinBackoff, MaxBackoff time.Duration
	// Dial opens the TCP connection; nil means directly, or through the
	// HTTP proxy HTTPS_PROXY names (NO_PROXY excepting) with CONNECT.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Listener is a net.Listener whose connections are the streams proxies
// open through the agent's tunnels: agent.Server serves it as it serves
// its own TCP listener, and the agent needs no listening socket.
type Listener struct {
	o      Options
	conns  chan net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*yamux.Session
	routed   map[string][]string
	// ids are the proxy ids the open sessions' acks named, by address;
	// learned are the proxies kept because presence names them, not the
	// configuration, each with what stops its keeper.
	ids     map[string]string
	learned map[string]context.CancelFunc
	once    sync.Once
}

// Peer is a proxy an agent learned of: its id in presence and its
// address.
type Peer struct {
	ID, Addr string
}

// Listen starts keeping a tunnel to every proxy of o.Addrs until the
// listener is closed.
func Listen(o Options) (*Listener, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("tunnel: no proxy address")
	}
	if o.TLS == nil || len(o.TLS.Certificates) == 0 {
		return nil, errors.New("tunnel: no host certificate")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.Dial == nil {
		o.Dial = dialEnv
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{o: o, conns: make(chan net.Conn), ctx: ctx, cancel: cancel,
		sessions: map[string]*yamux.Session{}, routed: map[string][]string{},
		ids: map[string]string{}, learned: map[string]context.CancelFunc{}}
	for _, a := range o.Addrs {
		l.wg.Go(func() { l.keep(ctx, a) })
	}
	return l, nil
}

// Learn sets the proxies the agent keeps a tunnel to besides those of
// Options.Addrs: the proxies presence names, so that an agent given one
// proxy reaches all of them and any can route to it. A proxy no longer
// named has its tunnel closed; one already reached at another address
// (its ack named the same id) is not dialed twice.
func (l *Listener) Learn(peers []Peer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return
	}
	want := map[string]bool{}
	for _, p := range peers {
		if p.Addr == "" || slices.Contains(l.o.Addrs, p.Addr) {
			continue
		}
		elsewhere := false
		for a, id := range l.ids {
			elsewhere = elsewhere || (id == p.ID && a != p.Addr)
		}
		if elsewhere {
			continue
		}
		want[p.Addr] = true
		if _, ok := l.learned[p.Addr]; !ok {
			ctx, cancel := context.WithCancel(l.ctx)
			l.learned[p.Addr] = cancel
			l.o.Log.Info("tunnel: proxy learned from presence", "proxy", p.Addr, "id", p.ID)
			l.wg.Go(func() { l.keep(ctx, p.Addr) })
		}
	}
	for a, cancel := range l.learned {
		if !want[a] {
			l.o.Log.Info("tunnel: proxy no longer in presence", "proxy", a)
			cancel()
			delete(l.learned, a)
		}
	}
}

// Accept returns the next client connection from any tunnel; it blocks
// while no tunnel is up and fails only once the listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close ends every tunnel; streams already accepted live on until their
// session is gone.
func (l *Listener) Close() error {
	l.once.Do(func() {
		// Cancelled under the lock, so that Learn starts no keeper the
		// Wait below would miss.
		l.mu.Lock()
		l.cancel()
		for _, s := range l.sessions {
			s.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return nil
}

// Addr names the tunnels, not a socket.
func (l *Listener) Addr() net.Addr { return tunnelAddr("tunnel") }

// Connected returns, for each proxy with an open tunnel, the databases it
// acknowledged.
func (l *Listener) Connected() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.routed))
	for a, dbs := range l.routed {
		out[a] = append([]string(nil), dbs...)
	}
	return out
}

// keep dials addr, serves the tunnel until it breaks, and dials again
// after a backoff that grows with each failure and starts over once a
// tunnel was up.
func (l *Listener) keep(ctx context.Context, addr string) {
	backoff := l.o.MinBackoff
	for ctx.Err() == nil {
		up, err := l.session(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if up {
			backoff = l.o.MinBackoff
			l.o.Log.Warn("tunnel: lost, redialing", "proxy", addr, "err", err)
		} else {
			l.o.Log.Warn("tunnel: cannot open", "proxy", addr, "err", err, "retry_in", backoff)
		}
		// Equal jitter: between half the backoff and all of it.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, l.o.MaxBackoff)
	}
}

// session opens one tunnel to addr and serves it until it ends; up says
// whether the proxy acknowledged it.
func (l *Listener) session(ctx context.Context, addr string) (up bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	raw, err := l.o.Dial(dctx, "tcp", addr)
	if err != nil {
		return false, err
	}
	tc := l.o.TLS.Clone()
	tc.NextProtos = []string{ALPN}
	if tc.ServerName == "" {
		if tc.ServerName, _, err = net.SplitHostPort(addr); err != nil {
			raw.Close()
			return false, err
		}
	}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(dctx); err != nil {
		raw.Close()
		return false, err
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != ALPN {
		conn.Close()
		return false, fmt.Errorf("the server at %s does not serve tunnels (ALPN %q)", addr, p)
	}
	sess, err := yamux.Client(CoalesceConn(BatchConn(conn)), SessionConfig(slog.NewLogLogger(l.o.Log.Handler(), slog.LevelDebug).Writer()))
	if err != nil {
		conn.Close()
		return false, err
	}
	defer sess.Close()
	// A learned proxy dropped from presence: its tunnel ends.
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	ack, err := l.hello(dctx, sess)
	if err != nil {
		return false, err
	}
	l.mu.Lock()
	if ctx.Err() != nil {
		l.mu.Unlock()
		return false, ctx.Err()
	}
	l.sessions[addr], l.routed[addr], l.ids[addr] = sess, ack.Databases, ack.Proxy
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.sessions, addr)
		delete(l.routed, addr)
		delete(l.ids, addr)
		l.mu.Unlock()
	}()
	l.o.Log.Info("tunnel: open", "proxy", addr, "databases", ack.Databases)
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return true, err
		}
		go l.stream(st)
	}
}

// hello sends the Hello on the control stream and reads the Ack. The
// control stream stays open for the life of the session.
func (l *Listener) hello(ctx context.Context, sess *yamux.Session) (Ack, error) {
	var ack Ack
	ctl, err := sess.OpenStream()
	if err != nil {
		return ack, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = ctl.SetDeadline(d)
	}
	if err := json.NewEncoder(ctl).Encode(Hello{HostID: l.o.HostID, Databases: l.o.Databases}); err != nil {
		return ack, err
	}
	if err := json.NewDecoder(ctl).Decode(&ack); err != nil {
		return ack, fmt.Errorf("tunnel: no answer to hello: %w", err)
	}
	_ = ctl.SetDeadline(time.Time{})
	if ack.Error != "" {
		return ack, fmt.Errorf("tunnel refused by the proxy: %s", ack.Error)
	}
	return ack, nil
}

// stream reads the preamble of a stream the proxy opened and hands it to
// Accept. A stream whose preamble does not come in time is dropped.
func (l *Listener) stream(st *yamux.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := ReadPreamble(st)
	if err != nil {
		l.o.Log.Info("tunnel: stream dropped", "err", err)
		st.Close()
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	c := &streamConn{Stream: st, remote: tunnelAddr(p.ClientAddr), probe: p.CancelProbe}
	select {
	case l.conns <- c:
	case <-l.ctx.Done():
		st.Close()
	}
}

// streamConn is a stream that names the client as its remote address.
type streamConn struct {
	*yamux.Stream
	remote net.Addr
	probe  bool
}

func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// CancelProbe says whether the stream carries a cancel request the proxy
// offers to every agent (Preamble.CancelProbe).
func (c *streamConn) CancelProbe() bool { return c.probe }

// CloseWrite half-closes the stream: yamux sends its FIN and the stream
// still reads what the proxy sends.
func (c *streamConn) CloseWrite() error { return c.Stream.Close() }

// tunnelAddr is an address given as text (host:port of a client).
type tunnelAddr string

func (a tunnelAddr) Network() string { return "tcp" }
func (a tunnelAddr) String() string  { return string(a) }

// Dial opens a TCP connection to a proxy as tunnels do: directly, or
// through the HTTP proxy HTTPS_PROXY names (NO_PROXY excepting).
func Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialEnv(ctx, network, addr)
}

// dialEnv dials addr directly or through the egress proxy the
// environment names.
func dialEnv(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	px, err := EgressProxy(addr)
	if err != nil {
		return nil, fmt.Errorf("tunnel: HTTPS_PROXY: %w", err)
	}
	if px == nil {
		return d.DialContext(ctx, network, addr)
	}
	return DialVia(ctx, d.DialContext, px, addr)
}
