// Package sqlserver is the agent's SQL Server engine (TDS 7.2 to 7.4). It
// terminates the client's TDS after the agent's TLS (answering PRELOGIN
// itself, with TLS inside TDS when the client insists on it), reads the
// client's LOGIN7 for the database user and database but never uses its
// credentials, checks access, and logs in to SQL Server itself (Kerberos
// with PKINIT or a keytab, or an RDS IAM token) over TLS. Every client
// message is reassembled from its packets and decoded before anything is
// forwarded: SQL batches, RPC requests with their parameters, cancels,
// transaction manager requests and bulk loads become audit events, and in
// strict mode a message reaches the database only once its events are
// stored. The server's token stream is scanned into one db.session.result
// per request. Input that does not decode is answered with a TDS error and
// never forwarded.
package sqlserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
	"github.com/tollgate-db/tollgate/events"
)

// Defaults of Options.
const (
	DefaultMaxMessage = 16 << 20
	DefaultMaxParam   = 64 << 10
)

// Error numbers and classes of the agent's own TDS errors. 18456 is SQL
// Server's login failure, 4002 its protocol stream error; 50000 is the
// first user-defined number.
const (
	errLogin     int32 = 18456
	errProtocol  int32 = 4002
	errTollgate  int32 = 50000
	classLogin   byte  = 14
	classRefused byte  = 16
	classFatal   byte  = 20
)

// Options tune the engine. Auth is required.
type Options struct {
	// Auth gives the agent's credentials towards SQL Server.
	Auth Authenticator
	// TLS holds the certificate for clients that ask for TLS inside TDS
	// (ENCRYPT_ON or ENCRYPT_REQ in PRELOGIN) although the agent's TLS
	// already protects them; nil makes a self-signed one.
	TLS *tls.Config
	// MaxMessage bounds a client message (16 MiB).
	MaxMessage int
	// MaxParam bounds the recorded rendering of one RPC parameter (64 KiB).
	MaxParam int
	// StartupTimeout bounds everything before the session is proxied (30s).
	StartupTimeout time.Duration
	// DialTimeout bounds connecting to the database (10s).
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Engine is the SQL Server engine.
type Engine struct {
	opt Options
	log *slog.Logger
	tls *tls.Config
}

var _ agent.Engine = (*Engine)(nil)

// New returns an engine.
func New(o Options) (*Engine, error) {
	if o.Auth == nil {
		return nil, errors.New("sqlserver: Options.Auth is required")
	}
	agent.SetDefault(&o.MaxMessage, DefaultMaxMessage)
	agent.SetDefault(&o.MaxParam, DefaultMaxParam)
	o.StartupTimeout, o.DialTimeout, o.Logger = agent.EngineDefaults(o.StartupTimeout, o.DialTimeout, o.Logger)
	e := &Engine{opt: o, log: o.Logger}
	if o.TLS != nil {
		e.tls = o.TLS.Clone()
	} else {
		cfg, err := selfSigned()
		if err != nil {
			return nil, err
		}
		e.tls = cfg
	}
	// TLS inside TDS 7.x stops at 1.2, as SQL Server's does: clients
	// (FreeTDS) send TLS 1.3's encrypted Finished unframed.
	e.tls.MaxVersion = tls.VersionTLS12
	e.tls.ClientAuth = tls.NoClientCert
	return e, nil
}

// selfSigned makes the certificate for TLS inside TDS when none is given:
// the agent's own TLS already authenticated it to the client, so this
// layer only satisfies clients that insist on encrypting.
func selfSigned() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tollgate-agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, nil
}

// clientSide is the client connection before the proxy starts.
type clientSide struct {
	*agent.ClientConn
	// rw is what TDS is read from and written to: the connection, or TLS
	// inside TDS on it.
	rw         net.Conn
	packetSize int
	encryption string
}

func (cs *clientSide) tokens(b []byte) {
	_, _ = cs.rw.Write(tds.AppendPackets(nil, tds.PacketReply, b, cs.packetSize, 0))
}

// errorTokens is an ERROR token and the DONE that ends the answer.
func errorTokens(number int32, class byte, msg string) []byte {
	b := tds.AppendError(nil, tds.TokenError, tds.ServerMessage{Number: number, State: 1, Class: class, Text: msg, Server: "tollgate"})
	return tds.AppendDone(b, tds.TokenDone, tds.DoneError, 0, 0)
}

// Serve runs one client connection.
func (e *Engine) Serve(ctx context.Context, c *agent.ClientConn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(e.opt.StartupTimeout))
	cs := &clientSide{ClientConn: c, rw: c.Conn, packetSize: tds.DefaultPacketSize, encryption: "tls"}
	r := tds.NewReader(cs.rw)
	m, err := r.ReadMessage()
	if err != nil {
		return e.earlyErr(cs, "", "", err, m.Raw)
	}
	if m.Type != tds.PacketPrelogin {
		return e.early(cs, "", "", fmt.Sprintf("the first message is %s, not PRELOGIN", tds.PacketTypeName(m.Type)), m.Raw)
	}
	pre, err := tds.ParsePrelogin(m.Payload)
	if err != nil {
		return e.early(cs, "", "", err.Error(), m.Raw)
	}
	enc := tds.EncryptNotSup
	if pre.HasEncryption && (pre.Encryption == tds.EncryptOn || pre.Encryption == tds.EncryptReq) {
		enc = tds.EncryptOn
	}
	ans := &tds.Prelogin{}
	ans.Set(tds.PreloginVersion, tds.VersionBytes(16, 0, 0, 0))
	ans.Set(tds.PreloginEncryption, []byte{enc})
	ans.Set(tds.PreloginInstance, []byte{0})
	ans.Set(tds.PreloginThreadID, nil)
	ans.Set(tds.PreloginMARS, []byte{0})
	if _, err := cs.rw.Write(tds.AppendPackets(nil, tds.PacketReply, ans.Append(nil), cs.packetSize, 0)); err != nil {
		return err
	}
	if enc == tds.EncryptOn {
		// The client insists on TLS inside TDS although the agent's TLS
		// carries it already: it gets it, with the engine's certificate.
		hc := tds.NewHandshakeConn(c.Conn)
		tc := tls.Server(hc, e.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return e.early(cs, "", "", "TLS handshake inside TDS: "+err.Error(), nil)
		}
		if err := hc.Flush(); err != nil {
			return err
		}
		hc.Passthrough()
		cs.rw = tc
		cs.encryption = "tls-in-tds"
		r = tds.NewReader(tc)
	}
	m, err = r.ReadMessage()
	if err != nil {
		return e.earlyErr(cs, "", "", err, m.Raw)
	}
	if m.Type != tds.PacketLogin7 {
		return e.early(cs, "", "", fmt.Sprintf("%s where LOGIN7 was expected", tds.PacketTypeName(m.Type)), m.Raw)
	}
	l, err := tds.ParseLogin7(m.Payload, 0)
	if err != nil {
		return e.early(cs, "", "", err.Error(), loginPrefix(m.Payload))
	}
	if c.Reject != nil {
		cs.tokens(errorTokens(errLogin, classLogin, "tollgate: "+c.Reject.Error()))
		return c.Reject
	}
	if l.TDSVersion < tds.Version72 {
		err := fmt.Errorf("TDS %s is not supported: use TDS 7.2 or later (tds version = 7.4 in freetds.conf)", tds.VersionName(l.TDSVersion))
		cs.tokens(errorTokens(errLogin, classLogin, "tollgate: "+err.Error()))
		return err
	}
	if _, fed := l.Feature(tds.FeatureFedAuth); fed {
		err := errors.New("federated (Entra ID) authentication from the client is not used: connect with a user name; the agent logs in to SQL Server itself")
		cs.tokens(errorTokens(errLogin, classLogin, "tollgate: "+err.Error()))
		return err
	}
	dbUser := strings.TrimSpace(l.UserName)
	if dbUser == "" {
		err := errors.New("the login names no user: connect with the database user as user name (any password; integrated authentication from the client is not used, the agent logs in to SQL Server itself)")
		cs.tokens(errorTokens(errLogin, classLogin, "tollgate: "+err.Error()))
		return err
	}
	return e.session(ctx, cs, l, dbUser, l.Database)
}

// loginPrefix is what of a malformed LOGIN7 may be recorded: the fixed
// part only, which holds no name and no password.
func loginPrefix(b []byte) []byte { return b[:min(len(b), 36)] }

// earlyErr handles a read error before the session: a malformed packet is
// recorded and answered; the end of the stream is not.
func (e *Engine) earlyErr(cs *clientSide, dbUser, dbName string, err error, raw []byte) error {
	var pe *tds.ProtocolError
	if errors.As(err, &pe) {
		return e.early(cs, dbUser, dbName, pe.Reason, pe.Prefix)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// early records malformed input before the session began in a session of
// its own (the identity is known from the certificate) and answers it.
func (e *Engine) early(cs *clientSide, dbUser, dbName, reason string, prefix []byte) error {
	c := cs.ClientConn
	if c.Reject == nil && c.Env != nil && c.Env.Recorder != nil {
		s := c.Env.NewSession(c.Identity, c.Database, dbUser, dbName)
		_ = s.Gate(context.Background(), malformedEvent("client", reason, prefix))
		s.Close(nil)
	}
	cs.tokens(errorTokens(errProtocol, classFatal, "tollgate: malformed TDS from the client: "+reason+"; the connection is closed and nothing of it was forwarded"))
	return errors.New("malformed client message: " + reason)
}

func malformedEvent(dir, reason string, prefix []byte) *events.MalformedPacket {
	ev := &events.MalformedPacket{Direction: dir, Reason: reason, Length: int64(len(prefix))}
	if len(prefix) > 0 {
		ev.Prefix = fmt.Sprintf("%x", prefix[:min(len(prefix), 64)])
	}
	return ev
}

// session checks access, logs in upstream, answers the login and proxies.
func (e *Engine) session(ctx context.Context, cs *clientSide, l *tds.Login7, dbUser, dbName string) error {
	c := cs.ClientConn
	db := c.Database
	info := db.Info()
	sess, err := c.StartSession(ctx, dbUser, dbName, denial)
	if err != nil {
		// A refusal's error is its message, so both read the same way.
		cs.tokens(errorTokens(errLogin, classLogin, "tollgate: "+err.Error()))
		return err
	}
	p := &proxy{Relay: agent.Relay{Tally: agent.Tally{Started: time.Now()}, Sess: sess, Client: cs.rw}, e: e, attnAck: make(chan struct{}, 1), version: min(l.TDSVersion, tds.Version74), dbUser: dbUser, dbName: dbName,
		prepared: map[string]string{}}
	creds, err := e.opt.Auth.Credentials(ctx, db, dbUser)
	if err != nil {
		msg := fmt.Sprintf("cannot log in to database %q as %q: %v", info.Name, dbUser, err)
		cs.tokens(errorTokens(errLogin, classLogin, "tollgate: "+msg))
		sess.Close(p.End("upstream credentials: " + err.Error()))
		return err
	}
	up, err := e.dial(ctx, db, l, creds)
	if err != nil {
		var lf *loginFailed
		if errors.As(err, &lf) {
			// The database refused the login: the client sees its words.
			cs.tokens(lf.tokens)
		} else {
			cs.tokens(errorTokens(errLogin, classLogin, fmt.Sprintf("tollgate: cannot connect to database %q: %v", info.Name, err)))
		}
		sess.Close(p.End("database login failed: " + err.Error()))
		return err
	}
	if up.database != "" && up.database != dbName {
		p.dbName = up.database
		sess.SetDB(dbUser, up.database)
	}
	_ = sess.Emit(&events.SQLServerLogin{
		AuthMethod: creds.Method, KerberosPrincipal: creds.Principal, SPN: creds.SPN,
		TDSVersion: tds.VersionName(up.version), ServerProgram: strings.TrimSpace(up.progName),
		ServerVersion: fmt.Sprintf("%d.%d.%d", up.progVersion>>24, up.progVersion>>16&0xFF, up.progVersion&0xFFFF),
		PacketSize:    uint32(up.packetSize), ClientProgram: l.AppName, ClientHost: l.HostName, ClientLibrary: l.CltIntName,
		ClientEncryption: cs.encryption,
	})
	cs.tokens(up.loginResp)
	_ = c.SetDeadline(time.Time{})
	p.packetSize.Store(int32(up.packetSize))
	// The lifecycle may end the session as soon as it knows how: the
	// upstream connection must be in place first.
	p.bind(up.conn)
	c.OnCancel(p.cancel)
	c.OnTerminate(sess, p.Terminate)
	return p.run(ctx)
}

// denial is the message a denied user sees, naming what was refused.
func denial(tgUser, db, dbUser, dbName string, d agent.Decision) string {
	return fmt.Sprintf("access denied: user %q may not connect to %q as db_user %q: %s", tgUser, db, dbUser, d.Refusal(dbUser, dbName))
}
