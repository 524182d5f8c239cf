// Package mysql is the agent's MySQL and MariaDB engine. It answers the
// client with its own greeting, reads who the client wants to be
// (db_user, db_name) while ignoring any password, checks access, connects
// to the database with TLS and a db-client certificate, and then proxies
// while decoding every command into audit events. In strict mode a command
// is forwarded only after its events are stored.
//
// Clients reach the engine two ways. Through the agent's TLS port (raw TLS,
// as `tg proxy db --tunnel` sends it) the engine speaks first inside TLS
// and offers no TLS of its own. A MySQL client connecting directly waits
// for the server's greeting in plaintext before it says anything, so the
// agent cannot tell it from a TLS client by its first bytes: such clients
// get a port of their own, wrapped with Engine.Listener, where the greeting
// goes out at once, TLS is required (SSLRequest) and the agent's TLS and
// certificate checks follow as for every connection.
package mysql

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/events"
)

// Default limits.
const (
	// DefaultMaxPacket bounds one client command (MariaDB's and MySQL 8's
	// default max_allowed_packet).
	DefaultMaxPacket = wire.DefaultMaxPayload
	// DefaultMaxParam bounds the recorded rendering of one parameter.
	DefaultMaxParam = 64 << 10
	// DefaultServerVersion is announced until the database's own version is
	// known (the greeting goes out before the agent connects upstream).
	DefaultServerVersion = "8.0.0-tollgate"
)

// Options tunes the engine; zero values take the defaults.
type Options struct {
	// MaxPacket bounds one client command payload; a bigger one closes the
	// connection unforwarded.
	MaxPacket int
	// MaxParam bounds the recorded text of one parameter value.
	MaxParam int
	// StartupTimeout bounds the connection phase (30s).
	StartupTimeout time.Duration
	// DialTimeout bounds connecting to the database (10s).
	DialTimeout time.Duration
	// ServerVersion is the greeting's version until a database answered
	// (DefaultServerVersion).
	ServerVersion string
	// Password, when set, gives the IAM token of a database behind RDS
	// Proxy (aws: {rds_proxy: true}), which authenticates MySQL clients
	// with mysql_clear_password: a new token for each upstream connection
	// (awsiam.Registry.Token). It is sent only inside the verified TLS
	// connection and never recorded.
	Password func(ctx context.Context, db *agent.Database, dbUser string) (string, error)
	Logger   *slog.Logger
}

// Engine is the MySQL/MariaDB engine. One Engine serves every MySQL
// database of an agent.
type Engine struct {
	opt Options
	log *slog.Logger

	mu       sync.Mutex
	direct   map[string]*greeting // by connection, for clients greeted before TLS
	versions map[string]string    // database name → last server version seen

	// port, when set, is the address of the engine's own port
	// (db_service.mysql_listen), opened by OpenPort with portOpts for the
	// databases portDBs.
	port     string
	portOpts ListenerOptions
	portDBs  []string
}

var _ agent.Engine = (*Engine)(nil)

// New returns an engine.
func New(o Options) *Engine {
	agent.SetDefault(&o.MaxPacket, DefaultMaxPacket)
	agent.SetDefault(&o.MaxParam, DefaultMaxParam)
	o.StartupTimeout, o.DialTimeout, o.Logger = agent.EngineDefaults(o.StartupTimeout, o.DialTimeout, o.Logger)
	if o.ServerVersion == "" {
		o.ServerVersion = DefaultServerVersion
	}
	return &Engine{opt: o, log: o.Logger, direct: map[string]*greeting{}, versions: map[string]string{}}
}

// serverCaps are the capabilities the agent offers a client. Compression
// (zlib) is the agent's own with the client (compress.go); the database
// gets plain packets. They leave out what the agent does not carry: zstd
// compression, query
// attributes and optional metadata (not every server has them), and
// MariaDB's extended capabilities (CLIENT_MYSQL is set, so clients speak
// plain MySQL protocol). Every server the agent reaches must offer the
// flags a client negotiates out of these; see checkUpstreamCaps.
const serverCaps = wire.ClientLongPassword | wire.ClientFoundRows | wire.ClientLongFlag |
	wire.ClientConnectWithDB | wire.ClientNoSchema | wire.ClientODBC | wire.ClientIgnoreSpace |
	wire.ClientProtocol41 | wire.ClientInteractive | wire.ClientIgnoreSIGPIPE | wire.ClientTransactions |
	wire.ClientSecureConnection | wire.ClientMultiStatements | wire.ClientMultiResults |
	wire.ClientPSMultiResults | wire.ClientPluginAuth | wire.ClientConnectAttrs |
	wire.ClientPluginAuthLenEncClientData | wire.ClientCanHandleExpiredPasswords |
	wire.ClientSessionTrack | wire.ClientDeprecateEOF | wire.ClientLocalFiles | wire.ClientCompress

// wireCaps are the negotiated flags that change what travels on the wire
// after the handshake, so the client and the server must agree on them.
const wireCaps = wire.ClientFoundRows | wire.ClientLongFlag | wire.ClientProtocol41 |
	wire.ClientTransactions | wire.ClientMultiStatements | wire.ClientMultiResults |
	wire.ClientPSMultiResults | wire.ClientSessionTrack | wire.ClientDeprecateEOF |
	wire.ClientIgnoreSpace | wire.ClientNoSchema | wire.ClientODBC

const (
	charsetUTF8MB4 = 45 // utf8mb4_general_ci
	scrambleLen    = 20
)

// greeting is what the agent told a client in its HandshakeV10.
type greeting struct {
	caps     wire.Capabilities
	scramble []byte
	// nextSeq is the sequence id of the client's HandshakeResponse41: 1
	// after a greeting in TLS, 2 after a greeting and an SSLRequest.
	nextSeq uint8
}

func (e *Engine) newGreeting(version string, offerTLS bool) (*greeting, []byte) {
	g := &greeting{caps: serverCaps, scramble: make([]byte, scrambleLen), nextSeq: 1}
	if offerTLS {
		g.caps |= wire.ClientSSL
	}
	_, _ = rand.Read(g.scramble)
	// The scramble must hold no NUL: part 2 is read up to one.
	for i, b := range g.scramble {
		if b == 0 {
			g.scramble[i] = byte(i + 1)
		}
	}
	hs := wire.HandshakeV10{
		ProtocolVersion: 10, ServerVersion: version,
		// The greeting goes out before the database assigns a connection
		// id. 0 is never a real one: a client that kills "its" query by
		// this id (mariadb's Ctrl-C) reaches no other session.
		ConnectionID:   0,
		AuthPluginData: g.scramble, Capabilities: g.caps, CharacterSet: charsetUTF8MB4,
		Status: wire.ServerStatusAutocommit, AuthPluginName: wire.PluginNativePassword,
	}
	return g, hs.Encode(nil)
}

func (e *Engine) versionFor(db *agent.Database) string {
	if db == nil {
		return e.opt.ServerVersion
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.versions[db.Config.Name]; ok {
		return v
	}
	return e.opt.ServerVersion
}

func (e *Engine) learnVersion(db *agent.Database, v string) {
	e.mu.Lock()
	e.versions[db.Config.Name] = v
	e.mu.Unlock()
}

// clientConn is the connection phase with one client.
type clientConn struct {
	*agent.ClientConn
	r *wire.Reader
	w *wire.Writer
}

// errPacket writes an ERR packet as the next packet of the exchange.
func (cc *clientConn) errPacket(code uint16, state, msg string) {
	p := (&wire.ErrPacket{Code: code, SQLState: state, Message: msg}).Encode(nil, wire.ClientProtocol41)
	cc.w.SetSeq(cc.r.Seq())
	_ = cc.w.WritePacket(p)
}

// Serve runs one client connection.
func (e *Engine) Serve(ctx context.Context, c *agent.ClientConn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(e.opt.StartupTimeout))
	cc := &clientConn{ClientConn: c, r: wire.NewReader(c, maxHandshake), w: wire.NewWriter(c)}
	g := e.takeDirect(c.LocalAddr().String(), c.RemoteAddr().String())
	if g == nil {
		var hs []byte
		g, hs = e.newGreeting(e.versionFor(c.Database), false)
		if err := cc.w.WritePacket(hs); err != nil {
			return err
		}
	}
	cc.r.SetSeq(g.nextSeq)
	payload, err := cc.r.ReadPacket()
	if err != nil {
		if errors.Is(err, wire.ErrPacketTooLarge) || errors.Is(err, wire.ErrSequence) {
			e.early(cc, "", "", &events.MalformedPacket{Direction: "client", Reason: "handshake response: " + err.Error()},
				codeMalformed, stateMalformed, "tollgate: malformed handshake response: "+err.Error())
		}
		return err
	}
	if wire.IsSSLRequest(payload) {
		err := errors.New("SSLRequest although the agent offered no TLS: the connection to the agent is already TLS")
		e.early(cc, "", "", malformedEvent(err.Error(), payload), codeMalformed, stateMalformed, "tollgate: "+err.Error())
		return err
	}
	var resp wire.HandshakeResponse41
	if err := resp.Decode(payload); err != nil {
		e.early(cc, "", "", malformedEvent("handshake response: "+err.Error(), nil),
			codeMalformed, stateMalformed, "tollgate: malformed handshake response: "+err.Error())
		return err
	}
	// The password the client computed against the agent's scramble proves
	// nothing (the certificate does) and is dropped unread.
	resp.AuthResponse = nil
	if c.Reject != nil {
		if errors.Is(c.Reject, agent.ErrTooManyConnections) {
			e.errOnly(cc, codeTooMany, stateTooMany, "tollgate: "+c.Reject.Error())
		} else {
			e.errOnly(cc, codeAccessDenied, stateAccessDenied, "tollgate: "+c.Reject.Error())
		}
		return c.Reject
	}
	caps := resp.Capabilities & g.caps
	switch {
	case !caps.Has(wire.ClientProtocol41):
		err := errors.New("the client does not speak protocol 4.1")
		e.early(cc, resp.Username, resp.Database, malformedEvent(err.Error(), nil), codeMalformed, stateMalformed, "tollgate: "+err.Error())
		return err
	case resp.Capabilities.Has(wire.ClientZstdCompressionAlgorithm):
		err := errors.New("the client asked for zstd compression, which the agent did not offer (zlib compression is offered)")
		e.early(cc, resp.Username, resp.Database, malformedEvent(err.Error(), nil), codeMalformed, stateMalformed, "tollgate: "+err.Error())
		return err
	case resp.Username == "":
		err := errors.New("the handshake names no user (the db_user)")
		e.errOnly(cc, codeAccessDenied, stateAccessDenied, "tollgate: "+err.Error())
		return err
	}
	dbName := ""
	if caps.Has(wire.ClientConnectWithDB) {
		dbName = resp.Database
	}
	return e.session(ctx, cc, &resp, caps, resp.Username, dbName)
}

// maxHandshake bounds the client's handshake response (attributes
// included; servers allow 64 KiB of attributes).
const maxHandshake = 128 << 10

// errOnly answers with an ERR packet.
func (e *Engine) errOnly(cc *clientConn, code uint16, state, msg string) {
	cc.errPacket(code, state, msg)
}

// early refuses a connection before a session exists: the refusal is
// recorded in a session of its own (so it has a sid and ei like every
// session event) and the client gets an ERR packet.
func (e *Engine) early(cc *clientConn, dbUser, dbName string, ev events.Event, code uint16, state, msg string) {
	c := cc.ClientConn
	if ev != nil && c.Env != nil && c.Env.Recorder != nil {
		s := c.Env.NewSession(c.Identity, c.Database, dbUser, dbName)
		_ = s.Gate(context.Background(), ev)
		s.Close(nil)
	}
	cc.errPacket(code, state, msg)
}

func malformedEvent(reason string, prefix []byte) *events.MalformedPacket {
	ev := &events.MalformedPacket{Direction: "client", Reason: reason, Length: int64(len(prefix))}
	if len(prefix) > 0 {
		ev.Prefix = fmt.Sprintf("%x", prefix[:min(len(prefix), 64)])
	}
	return ev
}

// session checks access, connects upstream, answers the client and
// proxies.
func (e *Engine) session(ctx context.Context, cc *clientConn, resp *wire.HandshakeResponse41, caps wire.Capabilities, dbUser, dbName string) error {
	c := cc.ClientConn
	db := c.Database
	info := db.Info()
	sess, err := c.StartSession(ctx, dbUser, dbName, agent.Denial)
	if err != nil {
		var denied *agent.DeniedError
		switch {
		case !errors.As(err, &denied):
			cc.errPacket(codeAuditUnavailable, stateAuditUnavailable, "tollgate: "+err.Error())
		case denied.Decision.Refused == "db_name":
			cc.errPacket(codeDBAccessDenied, stateDBAccessDenied, "tollgate: "+denied.Message)
		default:
			cc.errPacket(codeAccessDenied, stateAccessDenied, "tollgate: "+denied.Message)
		}
		return err
	}
	p := newProxy(e, sess, c, caps, dbUser, dbName)
	up, err := e.connect(ctx, c, db, resp, caps, dbUser, dbName)
	if err != nil {
		var dbErr *wire.ErrPacket
		if errors.As(err, &dbErr) {
			// The database refused the session: the client sees its
			// words.
			cc.errPacket(dbErr.Code, dbErr.SQLState, dbErr.Message)
		} else {
			cc.errPacket(codeConnectFailed, stateConnectFailed, fmt.Sprintf("tollgate: cannot connect to database %q: %v", info.Name, err))
		}
		sess.Close(p.End("database connection failed: " + err.Error()))
		return err
	}
	e.learnVersion(db, up.greeting.ServerVersion)
	// The database's own OK (status flags, session state) answers the
	// client.
	cc.w.SetSeq(cc.r.Seq())
	if err := cc.w.WritePacket(up.ok); err != nil {
		up.conn.Close()
		sess.Close(p.End("client connection lost"))
		return err
	}
	_ = c.SetDeadline(time.Time{})
	if caps.Has(wire.ClientCompress) {
		// Everything after the OK to the handshake is compressed, as the
		// client expects once it has read that OK.
		c.Conn = newCompressedConn(c.Conn, false)
	}
	connected := &events.MySQLConnected{
		ServerVersion: up.greeting.ServerVersion, ConnectionID: up.greeting.ConnectionID,
		Capabilities: caps.String(), AuthPlugin: up.plugin,
	}
	for _, a := range resp.Attributes {
		connected.Attributes = append(connected.Attributes, a.Key+"="+a.Value)
		if a.Key == "program_name" || (a.Key == "_client_name" && connected.ClientProgram == "") {
			connected.ClientProgram = a.Value
		}
	}
	_ = sess.Emit(connected)
	p.bind(up.conn)
	p.connID = up.greeting.ConnectionID
	p.kill = func(ctx context.Context) (string, error) {
		return e.killQuery(ctx, c, db, resp, dbUser, up.greeting.ConnectionID)
	}
	c.OnCancel(p.cancel)
	c.OnTerminate(sess, p.Terminate)
	return p.run(ctx, up.conn)
}

// Error codes and SQL states of the agent's own ERR packets, chosen from
// the server's so clients show them the usual way.
const (
	codeAccessDenied      = 1045 // ER_ACCESS_DENIED_ERROR
	stateAccessDenied     = "28000"
	codeDBAccessDenied    = 1044 // ER_DBACCESS_DENIED_ERROR
	stateDBAccessDenied   = "42000"
	codeAuditUnavailable  = 1105 // ER_UNKNOWN_ERROR: the message says why
	stateAuditUnavailable = "HY000"
	codeConnectFailed     = 1105
	stateConnectFailed    = "08S01"
	codeMalformed         = 1835 // ER_MALFORMED_PACKET
	stateMalformed        = "08S01"
	codeTooLarge          = 1153 // ER_NET_PACKET_TOO_LARGE
	codeOutOfOrder        = 1156 // ER_NET_PACKETS_OUT_OF_ORDER
	codeUnknownCommand    = 1047 // ER_UNKNOWN_COM_ERROR
	codeNotAllowed        = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
	stateNotAllowed       = "42000"
	codeInsecure          = 3159 // ER_SECURE_TRANSPORT_REQUIRED
	stateInsecure         = "HY000"
	codeTooMany           = 1040 // ER_CON_COUNT_ERROR
	stateTooMany          = "08004"
	codeConnectionKilled  = 1927 // ER_CONNECTION_KILLED
	stateConnectionKilled = "70100"
)

// quoteIdent quotes a database name for an error message.
func quoteIdent(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
