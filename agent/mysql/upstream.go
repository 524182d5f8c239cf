package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
)

// upstream is an authenticated database connection.
type upstream struct {
	conn     net.Conn
	greeting wire.HandshakeV10
	// ok is the database's final OK packet, relayed to the client.
	ok     []byte
	plugin string
}

// connect opens TLS to the database with a db-client certificate for
// dbUser and authenticates. The certificate is the credential: the user is
// created REQUIRE X509 or REQUIRE SUBJECT without a password, so every
// plugin the server asks for gets the empty password's answer. Behind RDS
// Proxy the credential is an IAM token instead, sent with
// mysql_clear_password. A refusal by the database is returned as
// *wire.ErrPacket.
func (e *Engine) connect(ctx context.Context, c *agent.ClientConn, db *agent.Database, resp *wire.HandshakeResponse41, caps wire.Capabilities, dbUser, dbName string) (*upstream, error) {
	cert, err := c.Env.ClientCert(ctx, db.Info(), dbUser)
	if err != nil {
		return nil, fmt.Errorf("no client certificate for db_user %q: %w", dbUser, err)
	}
	var token string
	if db.Config.AWS.RDSProxy && e.opt.Password != nil {
		if token, err = e.opt.Password(ctx, db, dbUser); err != nil {
			return nil, fmt.Errorf("IAM token for db_user %q: %w", dbUser, err)
		}
	}
	return dialUpstream(ctx, db.Addr, db.UpstreamTLS(cert), e.opt.DialTimeout, e.opt.StartupTimeout, resp, caps, dbUser, dbName, token)
}

// dialUpstream connects and authenticates as dbUser; token, when set, is
// the password of mysql_clear_password (RDS Proxy's IAM authentication),
// offered at once and given to a switch to that plugin.
func dialUpstream(ctx context.Context, addr string, cfg *tls.Config, dialTimeout, timeout time.Duration, resp *wire.HandshakeResponse41, caps wire.Capabilities, dbUser, dbName, token string) (*upstream, error) {
	d := net.Dialer{Timeout: dialTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			raw.Close()
		}
	}()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	r := wire.NewReader(raw, 1<<20)
	w := wire.NewWriter(raw)
	up := &upstream{}
	if err := readGreeting(r, &up.greeting, addr, caps); err != nil {
		return nil, err
	}
	ours := upstreamCaps(caps, up.greeting.Capabilities, dbName)
	r.SetSeq(1)
	w.SetSeq(1)
	ssl := wire.SSLRequest{Capabilities: ours, MaxPacketSize: resp.MaxPacketSize, CharacterSet: resp.CharacterSet}
	if err := w.WritePacket(ssl.Encode(nil)); err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS with the database: %w", err)
	}
	br := bufio.NewReaderSize(tc, 4096)
	r.Reset(br)
	w.Reset(tc)
	plugin, err := sendLogin(r, w, &up.greeting, ours, resp, dbUser, dbName, token)
	if err != nil {
		return nil, err
	}
	if up.ok, up.plugin, err = authenticate(r, w, plugin, token); err != nil {
		return nil, err
	}
	up.conn = &bufConn{Conn: tc, r: br}
	if ours.Has(wire.ClientCompress) {
		up.conn = newCompressedConn(up.conn, true)
	}
	_ = raw.SetDeadline(time.Time{})
	ok = true
	return up, nil
}

// readGreeting reads the database's greeting into g and checks that it
// offers TLS and what the client negotiated; a refusal in its place is
// returned as *wire.ErrPacket.
func readGreeting(r *wire.Reader, g *wire.HandshakeV10, addr string, caps wire.Capabilities) error {
	p, err := r.ReadPacket()
	if err != nil {
		return fmt.Errorf("reading the database's greeting: %w", err)
	}
	if err := g.Decode(p); err != nil {
		var ep *wire.ErrPacket
		if errors.As(err, &ep) {
			return ep
		}
		return fmt.Errorf("the database's greeting: %w", err)
	}
	if !g.Capabilities.Has(wire.ClientSSL) {
		return fmt.Errorf("the database at %s does not offer TLS", addr)
	}
	if missing := (caps & wireCaps) &^ g.Capabilities; missing != 0 {
		return fmt.Errorf("the database lacks capabilities the client negotiated: %s", missing)
	}
	return nil
}

// upstreamCaps is the agent's own request: what the client negotiated
// (compression too, where the database offers it), with TLS, the plugin
// protocol and MariaDB's extended flags left off (CLIENT_MYSQL).
func upstreamCaps(client, server wire.Capabilities, dbName string) wire.Capabilities {
	ours := client&^wire.ClientZstdCompressionAlgorithm |
		wire.ClientSSL | wire.ClientProtocol41 | wire.ClientSecureConnection | wire.ClientPluginAuth |
		wire.ClientPluginAuthLenEncClientData | wire.ClientLongPassword
	ours &= server | wire.ClientLongPassword
	if dbName != "" {
		ours |= wire.ClientConnectWithDB
	} else {
		ours &^= wire.ClientConnectWithDB
	}
	return ours & 0xffffffff
}

// sendLogin sends the handshake response inside TLS and returns the
// plugin it answered for.
func sendLogin(r *wire.Reader, w *wire.Writer, g *wire.HandshakeV10, ours wire.Capabilities, resp *wire.HandshakeResponse41, dbUser, dbName, token string) (string, error) {
	plugin := g.AuthPluginName
	if plugin == "" {
		plugin = wire.PluginNativePassword
	}
	if token != "" {
		plugin = wire.PluginClearPassword
	}
	auth, err := authResponse(plugin, g.AuthPluginData, token)
	if err != nil {
		// A plugin the agent cannot answer: offer the native one and let
		// the server switch.
		plugin = wire.PluginNativePassword
		auth = nil
	}
	hr := wire.HandshakeResponse41{
		Capabilities: ours, MaxPacketSize: resp.MaxPacketSize, CharacterSet: resp.CharacterSet,
		Username: dbUser, AuthResponse: auth, Database: dbName, AuthPlugin: plugin,
	}
	if ours.Has(wire.ClientConnectAttrs) {
		hr.Attributes = resp.Attributes
	}
	r.SetSeq(w.Seq() + 1)
	return plugin, w.WritePacket(hr.Encode(nil))
}

// authenticate answers the database until it accepts (its OK packet and
// the plugin it ended with are returned) or refuses (*wire.ErrPacket).
func authenticate(r *wire.Reader, w *wire.Writer, plugin, token string) (ok []byte, _ string, err error) {
	var auth []byte
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return nil, "", fmt.Errorf("authenticating to the database: %w", err)
		}
		if len(p) == 0 {
			return nil, "", errors.New("authenticating to the database: empty packet")
		}
		switch p[0] {
		case wire.OKHeader:
			return append([]byte(nil), p...), plugin, nil
		case wire.ErrHeader:
			var ep wire.ErrPacket
			if err := ep.Decode(p); err != nil {
				return nil, "", fmt.Errorf("the database's refusal: %w", err)
			}
			return nil, "", &ep
		case wire.AuthSwitchHeader:
			var sw wire.AuthSwitchRequest
			if err := sw.Decode(p); err != nil {
				return nil, "", fmt.Errorf("the database's auth switch: %w", err)
			}
			plugin = sw.PluginName
			if auth, err = authResponse(plugin, sw.PluginData, token); err != nil {
				return nil, "", err
			}
		case wire.AuthMoreDataHeader:
			var more wire.AuthMoreData
			if err := more.Decode(p); err != nil {
				return nil, "", fmt.Errorf("the database's auth data: %w", err)
			}
			if plugin != wire.PluginCachingSHA2 || len(more.Data) != 1 {
				return nil, "", fmt.Errorf("unexpected authentication data from the database for plugin %s", plugin)
			}
			switch more.Data[0] {
			case wire.CachingSHA2FastAuthSuccess:
				continue // the OK follows
			case wire.CachingSHA2PerformFullAuth:
				// Over TLS the password goes in clear: the empty one.
				auth = wire.CleartextPassword("")
			default:
				return nil, "", fmt.Errorf("unexpected caching_sha2_password state 0x%02x", more.Data[0])
			}
		default:
			return nil, "", fmt.Errorf("unexpected packet 0x%02x while authenticating to the database", p[0])
		}
		w.SetSeq(r.Seq())
		r.SetSeq(r.Seq() + 1)
		if err := w.WritePacket(auth); err != nil {
			return nil, "", err
		}
	}
}

// authResponse answers a plugin's challenge for the empty password, or
// mysql_clear_password's with token.
func authResponse(plugin string, data []byte, token string) ([]byte, error) {
	switch plugin {
	case wire.PluginNativePassword:
		return wire.ScrambleNativePassword(scramble20(data), ""), nil
	case wire.PluginCachingSHA2:
		return wire.ScrambleCachingSHA2(scramble20(data), ""), nil
	case wire.PluginEd25519:
		return wire.ScrambleEd25519(data, ""), nil
	case wire.PluginClearPassword:
		return wire.CleartextPassword(token), nil
	}
	return nil, fmt.Errorf("the database asked for authentication plugin %q; the agent authenticates with a client certificate: create the user REQUIRE X509 (or REQUIRE SUBJECT) with no password", plugin)
}

// scramble20 drops the NUL some servers append to a 20-byte scramble.
func scramble20(b []byte) []byte {
	if len(b) == scrambleLen+1 && b[scrambleLen] == 0 {
		return b[:scrambleLen]
	}
	return b
}

// bufConn reads through the buffer used during authentication, so bytes
// read ahead are not lost.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// killQuery stops what connection id runs: KILL QUERY over a second
// connection authenticated as the same db user with the same credential
// (a user may kill its own threads without further privileges). It
// returns the server's answer.
func (e *Engine) killQuery(ctx context.Context, c *agent.ClientConn, db *agent.Database, resp *wire.HandshakeResponse41, dbUser string, id uint32) (string, error) {
	// Only what the handshake needs: no attributes, no schema, plain
	// COM_QUERY framing.
	hr := &wire.HandshakeResponse41{MaxPacketSize: resp.MaxPacketSize, CharacterSet: resp.CharacterSet}
	up, err := e.connect(ctx, c, db, hr, wire.ClientProtocol41|wire.ClientTransactions, dbUser, "")
	if err != nil {
		return "", fmt.Errorf("KILL QUERY %d: connecting: %w", id, err)
	}
	defer up.conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = up.conn.SetDeadline(d)
	}
	w := wire.NewWriter(up.conn)
	r := wire.NewReader(up.conn, 1<<20)
	if err := w.WritePacket(append([]byte{byte(wire.ComQuery)}, fmt.Sprintf("KILL QUERY %d", id)...)); err != nil {
		return "", fmt.Errorf("KILL QUERY %d: %w", id, err)
	}
	r.SetSeq(1)
	p, err := r.ReadPacket()
	if err != nil {
		return "", fmt.Errorf("KILL QUERY %d: %w", id, err)
	}
	if len(p) > 0 && p[0] == wire.ErrHeader {
		var ep wire.ErrPacket
		_ = ep.Decode(p)
		return "", fmt.Errorf("KILL QUERY %d: %s", id, ep.Message)
	}
	return "OK", nil
}
