// Package postgres is the agent's PostgreSQL engine (also used for
// CockroachDB): it terminates the client's protocol after TLS, checks
// access, connects to the database with a db-client certificate, and
// proxies while decoding every message into audit events. In strict mode a
// client batch is forwarded only after its events are stored.
package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// Default limits on client messages. A message over its limit closes the
// connection; nothing of it is forwarded.
const (
	DefaultMaxMessage  = 16 << 20
	DefaultMaxCopyData = 64 << 20
	DefaultMaxParam    = 64 << 10
)

// Options tunes the engine; zero values take the defaults.
type Options struct {
	// MaxMessage bounds every client message but CopyData.
	MaxMessage int
	// MaxCopyData bounds one CopyData message.
	MaxCopyData int
	// MaxParam bounds the recorded rendering of one bound parameter.
	MaxParam int
	// StartupTimeout bounds the startup phase (30s).
	StartupTimeout time.Duration
	// DialTimeout bounds connecting to the database (10s).
	DialTimeout time.Duration
	// RefusePlaintextCancel refuses cancel requests sent without TLS (as
	// libpq before version 17 sends them).
	RefusePlaintextCancel bool
	// Password, when set, answers a database behind RDS Proxy (aws:
	// {rds_proxy: true}) that asks for a cleartext password, as RDS
	// Proxy does with IAM authentication: it returns the password of a
	// new upstream connection (awsiam.Registry.Token signs an IAM token).
	// It is sent only inside the verified TLS connection and never
	// recorded; other databases asking for a password are refused.
	Password func(ctx context.Context, db *agent.Database, dbUser string) (string, error)
	Logger   *slog.Logger
}

// Engine is the PostgreSQL engine. One Engine serves every PostgreSQL (and
// CockroachDB) database of an agent; it holds the cancel keys of all their
// sessions.
type Engine struct {
	opt  Options
	log  *slog.Logger
	keys cancelKeys
}

// New returns an engine.
func New(o Options) *Engine {
	agent.SetDefault(&o.MaxMessage, DefaultMaxMessage)
	agent.SetDefault(&o.MaxCopyData, DefaultMaxCopyData)
	agent.SetDefault(&o.MaxParam, DefaultMaxParam)
	o.StartupTimeout, o.DialTimeout, o.Logger = agent.EngineDefaults(o.StartupTimeout, o.DialTimeout, o.Logger)
	return &Engine{opt: o, log: o.Logger}
}

var (
	_ agent.Engine              = (*Engine)(nil)
	_ agent.PlaintextNegotiator = (*Engine)(nil)
)

// NegotiatePlaintext answers a connection that did not start with TLS: an
// SSLRequest (psql connecting directly) gets 'S' and TLS follows;
// everything else gets a clear ErrorResponse, since the agent only talks
// to clients that present a certificate over TLS.
func (e *Engine) NegotiatePlaintext(ctx context.Context, conn net.Conn, env *agent.Env) (bool, error) {
	code, body, err := readStartup(conn)
	if err != nil {
		if code != 0 {
			_, _ = conn.Write(errorResponse("FATAL", stateProtocolViolation, "tollgate: "+err.Error()))
		}
		return false, err
	}
	switch {
	case code == codeSSL && len(body) == 0:
		_, err := conn.Write([]byte{'S'})
		return err == nil, err
	case code == codeGSSENC:
		_, _ = conn.Write(errorResponse("FATAL", stateFeatureNotSupported,
			"tollgate: GSSAPI encryption is not supported: connect with TLS and a Tollgate certificate (gssencmode=disable sslmode=require, or through tg proxy db)"))
		return false, fmt.Errorf("%w: GSSENCRequest", agent.ErrPlaintextRefused)
	case code == codeCancel:
		// libpq before 17 sends cancel requests without TLS, whatever the
		// session used. The key it carries was only ever sent inside TLS
		// and a cancel reads or changes no data, so it is honoured (and
		// recorded as sent without TLS) unless the engine refuses it.
		if cp, ok := conn.(agent.CancelProber); ok && cp.CancelProbe() {
			return false, e.probedCancel(ctx, env, conn, body)
		}
		return false, e.cancel(ctx, env, nil, body, conn.RemoteAddr().String(), false)
	case code>>16 == 3:
		_, _ = conn.Write(errorResponse("FATAL", stateInvalidAuthorization,
			"tollgate: connection without TLS refused: the agent requires TLS with a Tollgate client certificate (use sslmode=require with sslcert/sslkey, or tg proxy db)"))
		return false, fmt.Errorf("%w: plaintext startup", agent.ErrPlaintextRefused)
	}
	_, _ = conn.Write(errorResponse("FATAL", stateProtocolViolation,
		fmt.Sprintf("tollgate: unsupported startup request code %d", code)))
	return false, fmt.Errorf("unsupported startup request code %d", code)
}

// Serve runs one client connection.
func (e *Engine) Serve(ctx context.Context, c *agent.ClientConn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(e.opt.StartupTimeout))
	var (
		code uint32
		body []byte
		err  error
	)
	// Inside TLS a client may still ask for encryption (the tunnel passes
	// psql's SSLRequest through); the answer is no, as it already is.
	for i := 0; ; i++ {
		code, body, err = readStartup(c)
		if err != nil {
			if code != 0 {
				e.fatal(c, stateProtocolViolation, err.Error())
			}
			return err
		}
		if (code == codeSSL || code == codeGSSENC) && len(body) == 0 && i < 2 {
			if _, err := c.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		}
		break
	}
	switch {
	case code == codeCancel:
		return e.cancel(ctx, c.Env, c, body, c.RemoteAddr().String(), true)
	case code>>16 != 3:
		err := fmt.Errorf("unsupported protocol version %d.%d", code>>16, code&0xffff)
		e.fatal(c, stateFeatureNotSupported, err.Error())
		return err
	}
	if c.Reject != nil {
		code := stateInvalidAuthorization
		if errors.Is(c.Reject, agent.ErrTooManyConnections) {
			code = stateTooManyConnections // as PostgreSQL refuses past max_connections
		}
		e.fatal(c, code, c.Reject.Error())
		return c.Reject
	}
	params, err := parseStartupParams(body)
	if err != nil {
		e.fatal(c, stateProtocolViolation, err.Error())
		return err
	}
	user, dbName := params["user"], params["database"]
	if user == "" {
		err := errors.New("the startup message names no user")
		e.fatal(c, stateInvalidAuthorization, err.Error())
		return err
	}
	if dbName == "" {
		dbName = user
	}
	if r, ok := params["replication"]; ok && !isFalse(r) {
		err := errors.New("replication connections are not supported through the agent")
		e.fatal(c, stateFeatureNotSupported, err.Error())
		return err
	}
	return e.session(ctx, c, code, params, user, dbName)
}

func isFalse(s string) bool {
	switch strings.ToLower(s) {
	case "false", "off", "no", "0":
		return true
	}
	return false
}

func (e *Engine) fatal(w io.Writer, code, msg string) {
	_, _ = w.Write(errorResponse("FATAL", code, "tollgate: "+msg))
}

// session checks access, connects upstream and proxies.
func (e *Engine) session(ctx context.Context, c *agent.ClientConn, version uint32, params map[string]string, user, dbName string) error {
	db := c.Database
	info := db.Info()
	sess, err := c.Start(ctx, agent.SessionRequest{DBUser: user, DBName: dbName, Deny: agent.Denial,
		StartupParameters: recordedParameters(params),
		Refuse:            startupRefusal(params, refuseList(db))})
	if err != nil {
		var (
			denied  *agent.DeniedError
			refused *agent.RefusedError
		)
		switch {
		case errors.As(err, &denied):
			e.fatal(c, stateInvalidAuthorization, denied.Message)
		case errors.As(err, &refused):
			e.fatal(c, stateInsufficientPrivilege, refused.Message)
		default:
			e.fatal(c, stateAuditUnavailable, err.Error())
		}
		return err
	}
	p := &proxy{Relay: agent.Relay{Tally: agent.Tally{Started: time.Now()}, Sess: sess, Client: c}, e: e, refuseList: refuseList(db)}
	defer func() {
		if p.key != nil {
			e.keys.remove(p.key)
		}
	}()
	up, err := e.connect(ctx, c, db, version, params, user, p)
	if err != nil {
		var relayed *relayedError
		if !errors.As(err, &relayed) {
			e.fatal(c, stateConnectionFailure, fmt.Sprintf("cannot connect to database %q: %v", info.Name, err))
		}
		sess.Close(p.End("database connection failed: " + err.Error()))
		return err
	}
	_ = c.SetDeadline(time.Time{})
	p.bind(up.conn)
	c.OnCancel(p.cancel)
	c.OnTerminate(sess, p.Terminate)
	return p.run(ctx, up)
}

// relayedError is a database error the client has already been sent.
type relayedError struct{ error }

func (e *relayedError) Unwrap() error { return e.error }

// upstream is an established database connection.
type upstream struct {
	conn net.Conn
	r    io.Reader
}

// dialTLS opens a TLS connection to a PostgreSQL server: TCP, SSLRequest,
// 'S', handshake.
func dialTLS(ctx context.Context, addr string, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(timeout))
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], codeSSL)
	if _, err := raw.Write(req[:]); err != nil {
		raw.Close()
		return nil, err
	}
	var ans [1]byte
	if _, err := io.ReadFull(raw, ans[:]); err != nil {
		raw.Close()
		return nil, fmt.Errorf("no answer to SSLRequest: %w", err)
	}
	if ans[0] != 'S' {
		raw.Close()
		return nil, fmt.Errorf("the database at %s does not accept TLS (answered %q to SSLRequest)", addr, ans[0])
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS with the database: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	return tc, nil
}

// connect opens the upstream session and relays its startup answer to the
// client, replacing the backend key with one of the agent's.
func (e *Engine) connect(ctx context.Context, c *agent.ClientConn, db *agent.Database, version uint32, params map[string]string, user string, p *proxy) (*upstream, error) {
	cert, err := c.Env.ClientCert(ctx, db.Info(), user)
	if err != nil {
		return nil, fmt.Errorf("no client certificate for db_user %q: %w", user, err)
	}
	cfg := db.UpstreamTLS(cert)
	tc, err := dialTLS(ctx, db.Addr, cfg, e.opt.DialTimeout)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			tc.Close()
		}
	}()
	_ = tc.SetDeadline(time.Now().Add(e.opt.StartupTimeout))
	sm, err := (&pgproto3.StartupMessage{ProtocolVersion: version, Parameters: params}).Encode(nil)
	if err != nil {
		return nil, err
	}
	if _, err := tc.Write(sm); err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(tc, 64<<10)
	var out []byte
	for {
		typ, body, err := readMessage(r, maxStartup*16)
		if err != nil {
			return nil, fmt.Errorf("reading the database's startup answer: %w", err)
		}
		switch typ {
		case 'R':
			if len(body) < 4 {
				return nil, errors.New("short authentication message from the database")
			}
			m := binary.BigEndian.Uint32(body)
			if m == authCleartextPassword && e.opt.Password != nil && db.Config.AWS.RDSProxy {
				pw, err := e.opt.Password(ctx, db, user)
				if err != nil {
					return nil, fmt.Errorf("password for db_user %q: %w", user, err)
				}
				if _, err := tc.Write(appendMessage(nil, 'p', append([]byte(pw), 0))); err != nil {
					return nil, err
				}
				continue
			}
			if m != 0 {
				return nil, fmt.Errorf("the database asked for %s authentication; the agent authenticates with a client certificate: configure pg_hba.conf with hostssl ... cert for db_user %q", authName(m), user)
			}
			out = appendMessage(out, typ, body)
		case 'K':
			if len(body) < 4+minSecretKey || len(body) > 4+maxSecretKey {
				return nil, fmt.Errorf("BackendKeyData from the database has %d bytes", len(body))
			}
			if p.key != nil {
				return nil, errors.New("a second BackendKeyData from the database")
			}
			t := &cancelTarget{sess: p.Sess, user: c.Identity.User, addr: db.Addr, tls: cfg,
				pid: binary.BigEndian.Uint32(body), secret: append([]byte(nil), body[4:]...)}
			// The client is told its backend's process id, so that
			// pg_backend_pid, pg_terminate_backend and NOTIFY agree with
			// it; only the secret is the agent's own.
			p.key = e.keys.add(t)
			p.target = t
			p.backendPID = t.pid
			out = appendMessage(out, 'K', append(binary.BigEndian.AppendUint32(nil, t.pid), p.key...))
		case 'E':
			// The database refused the session (no such database, cert
			// not accepted...): the client sees its own words.
			_, _ = c.Write(appendMessage(out, typ, body))
			return nil, &relayedError{fmt.Errorf("the database refused the session: %s", errorText(body))}
		case 'Z':
			out = appendMessage(out, typ, body)
			if _, err := c.Write(out); err != nil {
				return nil, err
			}
			if len(body) == 1 {
				p.txStatus.Store(uint32(body[0]))
			}
			_ = tc.SetDeadline(time.Time{})
			ok = true
			return &upstream{conn: tc, r: r}, nil
		case 'S', 'N', 'v':
			out = appendMessage(out, typ, body)
		default:
			return nil, fmt.Errorf("unexpected message %q from the database during startup", typ)
		}
	}
}

// authCleartextPassword is AuthenticationCleartextPassword's code.
const authCleartextPassword = 3

func authName(m uint32) string {
	switch m {
	case 3:
		return "cleartext password"
	case 5:
		return "MD5 password"
	case 7, 8:
		return "GSSAPI"
	case 9:
		return "SSPI"
	case 10:
		return "SASL (SCRAM)"
	}
	return fmt.Sprintf("method %d", m)
}

// readMessage reads one typed message.
func readMessage(r io.Reader, max int) (byte, []byte, error) {
	var hdr [headerLength]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n-4 > max {
		return 0, nil, fmt.Errorf("message %q has length %d", hdr[0], n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

func appendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(body)+4))
	return append(dst, body...)
}

// errorFields returns SQLSTATE, severity and message of an ErrorResponse or
// NoticeResponse body without allocating beyond the strings it returns.
func errorFields(body []byte) (code, severity, msg string) {
	for len(body) > 0 && body[0] != 0 {
		f := body[0]
		v, rest, ok := cutZero(body[1:])
		if !ok {
			break
		}
		switch f {
		case 'C':
			code = v
		case 'V':
			severity = v
		case 'S':
			if severity == "" {
				severity = v
			}
		case 'M':
			msg = v
		}
		body = rest
	}
	return code, severity, msg
}

func errorText(body []byte) string {
	code, sev, msg := errorFields(body)
	return fmt.Sprintf("%s %s: %s", sev, code, msg)
}

// cancel handles a CancelRequest: find the session the key belongs to,
// record the request there, and forward it with the database's real key.
// Over TLS the requester must be the session's user. A request with a key
// no session holds is recorded on its own and goes nowhere.
func (e *Engine) cancel(ctx context.Context, env *agent.Env, c *agent.ClientConn, body []byte, addr string, overTLS bool) error {
	if len(body) < 4+minSecretKey || len(body) > 4+maxSecretKey {
		return fmt.Errorf("cancel request of %d bytes", len(body)+8)
	}
	pid := binary.BigEndian.Uint32(body)
	var (
		reject error
		user   string
	)
	if c != nil {
		reject, user = c.Reject, c.Identity.User
	}
	t := e.keys.get(pid, body[4:])
	if t == nil {
		// As PostgreSQL does, the client is told nothing: an unknown key
		// is no one's. The attempt is still part of the trail.
		err := errors.New("cancel request with an unknown key")
		e.unknownCancel(env, c, pid, addr, overTLS)
		return err
	}
	ev := &events.PostgresCancel{ClientAddr: addr, BackendPID: t.pid, TLS: overTLS}
	switch {
	case !overTLS && e.opt.RefusePlaintextCancel:
		ev.Error = "cancel refused: sent without TLS"
	case reject != nil:
		ev.Error = "cancel refused: " + reject.Error()
	case overTLS && user != t.user:
		ev.Error = fmt.Sprintf("cancel refused: the session belongs to %q, the request came from %q", t.user, user)
	default:
		ev.Success = true
	}
	if err := t.sess.Gate(ctx, ev); err != nil {
		return fmt.Errorf("cancel not forwarded: %w", err)
	}
	if !ev.Success {
		return errors.New(ev.Error)
	}
	return t.send(ctx, e.opt.DialTimeout)
}

// probedCancel answers a cancel request a proxy offers to every agent
// (tunnel.Preamble.CancelProbe): one byte saying whether the key is one
// this agent issued, after handling it as cancel does. A key of another
// agent is not recorded here: the proxy records one no agent knew.
func (e *Engine) probedCancel(ctx context.Context, env *agent.Env, conn net.Conn, body []byte) error {
	if len(body) < 4+minSecretKey || len(body) > 4+maxSecretKey || e.keys.get(binary.BigEndian.Uint32(body), body[4:]) == nil {
		_, _ = conn.Write([]byte{tunnel.CancelUnknown})
		return nil
	}
	err := e.cancel(ctx, env, nil, body, conn.RemoteAddr().String(), false)
	_, _ = conn.Write([]byte{tunnel.CancelMatched})
	return err
}

// unknownCancel records a cancel request whose key no session holds,
// with whatever is known of who sent it, as a refusal before any session:
// anyone who reaches the port can send these, so they are aggregated per
// source rather than stored one by one.
func (e *Engine) unknownCancel(env *agent.Env, c *agent.ClientConn, pid uint32, addr string, overTLS bool) {
	if env == nil {
		return
	}
	how := "without TLS"
	if overTLS {
		how = "over TLS"
	}
	ev := agent.RejectedFrom(addr, events.RejectUnknownCancelKey, fmt.Errorf("cancel request %s for backend %d with a key no session holds", how, pid))
	ev.Protocol = protocol.Postgres
	if c != nil {
		ev.Envelope.User, ev.Roles = c.Identity.User, c.Identity.Roles
		ev.SNI = c.ServerName
		if c.Database != nil {
			i := c.Database.Info()
			ev.Service, ev.Protocol = i.Name, i.Protocol
		}
	}
	env.Reject(ev)
}
