// Package tdsserver is a SQL Server stand-in for tests: it speaks TDS 7.x
// as strictly as SQL Server does (PRELOGIN first, TLS inside TDS packets,
// LOGIN7 offsets checked, ALL_HEADERS required, a request at a time),
// verifies Kerberos logins (SPNEGO around an AP-REQ) with a keytab exported
// from a real KDC, checks SQL logins with a callback, and answers enough
// SQL (select of literals and parameters, waitfor delay, use, set, begin,
// commit and rollback, raiserror, print) and RPCs (sp_executesql,
// sp_prepare, sp_execute, sp_prepexec, sp_unprepare) for go-mssqldb and
// FreeTDS to run queries, cancel them, and see errors.
//
// Everything it refused is kept as a violation, so tests can prove that a
// proxy forwarded nothing it should not have.
package tdsserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
)

// ServerVersion is what the server reports: SQL Server 2022.
const (
	ProgName    = "Microsoft SQL Server"
	ProgVersion = 0x10000FA0 // 16.0.4000
)

// Config configures a Server.
type Config struct {
	// TLS holds the server's certificate for TLS inside TDS. Without it
	// the server answers ENCRYPT_NOT_SUP.
	TLS *tls.Config
	// ForceEncryption makes the server require encryption of the whole
	// session (SQL Server's "Force Encryption").
	ForceEncryption bool
	// Keytab holds the service's keys: Kerberos logins are verified with
	// it. Nil refuses integrated logins.
	Keytab *keytab.Keytab
	// KerberosReply makes the server answer a Kerberos login with an SSPI
	// token of its own (a SPNEGO accept-completed) in a message before
	// the login response, as SQL Server does when the client asked for
	// mutual authentication. Without it the server sends none, as SQL
	// Server does when there is nothing to return.
	KerberosReply bool
	// Password checks SQL logins; nil refuses them.
	Password func(user, password string) error
	// MaxPassword allows passwords longer than SQL Server's 128
	// characters (RDS Proxy takes IAM tokens there).
	MaxPassword int
	// Databases the server has (master and app by default).
	Databases []string
	Logger    *slog.Logger
}

// Login is a login the server accepted.
type Login struct {
	Method     string // kerberos or sql
	User       string // the LOGIN7 user name, or the Kerberos principal
	Principal  string // Kerberos client principal (user@REALM)
	Database   string
	AppName    string
	HostName   string
	TDSVersion uint32
	PacketSize uint32
	Encryption byte // what was negotiated
}

// Server is a running TDS server.
type Server struct {
	cfg Config
	ln  net.Listener
	log *slog.Logger

	mu         sync.Mutex
	logins     []Login
	violations []string
	batches    []string
	rpcs       []tds.RPCCall
	tms        []tds.TMRequest
	attentions int
	conns      map[net.Conn]struct{}
	nextHandle int32
	stmts      map[int32][2]string
	wg         sync.WaitGroup
	closed     bool
}

// New returns a server; Serve runs it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Databases) == 0 {
		cfg.Databases = []string{"master", "app"}
	}
	if cfg.TLS != nil && cfg.TLS.MaxVersion == 0 {
		// SQL Server negotiates at most TLS 1.2 inside TDS 7.x (TLS 1.3
		// needs TDS 8's TLS-first connections); clients count on it.
		cfg.TLS = cfg.TLS.Clone()
		cfg.TLS.MaxVersion = tls.VersionTLS12
	}
	return &Server{cfg: cfg, log: cfg.Logger, conns: map[net.Conn]struct{}{}, nextHandle: 1}
}

// Listen starts a server on a free loopback port.
func Listen(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := New(cfg)
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.Serve(ln)
	}()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve accepts connections on ln until it is closed.
func (s *Server) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serveConn(c)
		}()
	}
}

// Close stops listening, closes every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	s.wg.Wait()
	return err
}

// Logins returns the logins accepted so far.
func (s *Server) Logins() []Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Login(nil), s.logins...)
}

// Violations returns what the server refused as malformed or out of
// protocol, in order.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Batches returns the SQL batches received.
func (s *Server) Batches() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.batches...)
}

// RPCs returns the procedure calls received.
func (s *Server) RPCs() []tds.RPCCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tds.RPCCall(nil), s.rpcs...)
}

// TransactionRequests returns the transaction manager requests received.
func (s *Server) TransactionRequests() []tds.TMRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tds.TMRequest(nil), s.tms...)
}

// Attentions counts the Attention messages received.
func (s *Server) Attentions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attentions
}

func (s *Server) violation(format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	s.mu.Lock()
	s.violations = append(s.violations, msg)
	s.mu.Unlock()
	s.log.Info("tdsserver: protocol violation", "err", msg)
	return errors.New(msg)
}

// conn is one client connection.
type conn struct {
	s          *Server
	raw        net.Conn
	rw         io.ReadWriter
	packetSize int
	version    uint32
	database   string
	info       Login
	txn        uint64
	spid       uint16
	msgs       chan msgOrErr
	stop       chan struct{}
	pendingOut []outValue
}

type msgOrErr struct {
	typ     byte
	status  byte
	payload []byte
	err     error
}

func (s *Server) serveConn(raw net.Conn) {
	c := &conn{s: s, raw: raw, rw: raw, packetSize: tds.DefaultPacketSize, spid: 51}
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.login(); err != nil {
		s.log.Info("tdsserver: login ended", "err", err)
		return
	}
	_ = raw.SetDeadline(time.Time{})
	c.run()
}

// fail records a protocol violation, tells the client as SQL Server does
// (error 4002) when it can still read, and ends the connection.
func (c *conn) fail(format string, a ...any) error {
	err := c.s.violation(format, a...)
	c.writeTokens(tds.AppendDone(tds.AppendError(nil, tds.TokenError, tds.ServerMessage{
		Number: 4002, State: 1, Class: 16, Server: "tdsserver",
		Text: "The incoming tabular data stream (TDS) protocol stream is incorrect. " + err.Error(),
	}), tds.TokenDone, tds.DoneError, 0, 0))
	return err
}

func (c *conn) writeTokens(b []byte) error {
	_, err := c.rw.Write(tds.AppendPackets(nil, tds.PacketReply, b, c.packetSize, c.spid))
	return err
}

func (c *conn) readMessage(r *tds.Reader) (tds.Message, error) {
	r.MaxPacket = c.packetSize
	m, err := r.ReadMessage()
	if err != nil {
		var pe *tds.ProtocolError
		if errors.As(err, &pe) {
			return m, c.fail("%v", err)
		}
		return m, err
	}
	return m, nil
}

func (c *conn) login() error {
	r := tds.NewReader(c.raw)
	m, err := c.readMessage(r)
	if err != nil {
		return err
	}
	if m.Type != tds.PacketPrelogin {
		// SQL Server closes a connection that does not begin with
		// PRELOGIN without answering.
		return c.s.violation("first message is %s, not PRELOGIN", tds.PacketTypeName(m.Type))
	}
	pre, err := tds.ParsePrelogin(m.Payload)
	if err != nil {
		return c.s.violation("%v", err)
	}
	if !pre.HasEncryption {
		return c.s.violation("PRELOGIN without ENCRYPTION")
	}
	enc := c.negotiate(pre.Encryption)
	ans := &tds.Prelogin{}
	ans.Set(tds.PreloginVersion, tds.VersionBytes(16, 0, 4000, 0))
	ans.Set(tds.PreloginEncryption, []byte{enc})
	ans.Set(tds.PreloginInstance, []byte{0})
	ans.Set(tds.PreloginThreadID, nil)
	ans.Set(tds.PreloginMARS, []byte{0})
	if _, err := c.raw.Write(tds.AppendPackets(nil, tds.PacketReply, ans.Append(nil), c.packetSize, 0)); err != nil {
		return err
	}
	c.info.Encryption = enc
	if enc == tds.EncryptReq && pre.Encryption == tds.EncryptNotSup {
		return c.s.violation("client does not support encryption, which the server requires")
	}
	var tc *tls.Conn
	if enc == tds.EncryptOff || enc == tds.EncryptOn || enc == tds.EncryptReq {
		hc := tds.NewHandshakeConn(c.raw)
		tc = tls.Server(hc, c.s.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			return c.s.violation("TLS handshake inside TDS: %v", err)
		}
		if err := hc.Flush(); err != nil {
			return err
		}
		hc.Passthrough()
		c.rw = tc
		r = tds.NewReader(tc)
	}
	m, err = c.readMessage(r)
	if err != nil {
		return err
	}
	if m.Type != tds.PacketLogin7 {
		return c.fail("%s where LOGIN7 was expected", tds.PacketTypeName(m.Type))
	}
	l, err := tds.ParseLogin7(m.Payload, c.s.cfg.MaxPassword)
	if err != nil {
		return c.fail("%v", err)
	}
	if enc == tds.EncryptOff {
		// Only the login was encrypted: the rest goes in the clear.
		c.rw = c.raw
	}
	c.version = l.TDSVersion
	if c.version > tds.Version74 {
		c.version = tds.Version74
	}
	c.info.TDSVersion, c.info.AppName, c.info.HostName = l.TDSVersion, l.AppName, l.HostName
	switch {
	case l.IntegratedSecurity():
		if len(l.SSPI) == 0 {
			return c.fail("integrated security without an SSPI token")
		}
		principal, resp, err := c.s.verifyKerberos(l.SSPI)
		if err != nil {
			c.loginFailed("", "Login failed. The login is from an untrusted domain and cannot be used with Integrated authentication. ("+err.Error()+")")
			return c.s.violation("kerberos: %v", err)
		}
		c.info.Method, c.info.Principal = "kerberos", principal
		c.info.User, _, _ = strings.Cut(principal, "@")
		if c.s.cfg.KerberosReply {
			if err := c.writeTokens(tds.AppendSSPI(nil, resp)); err != nil {
				return err
			}
		}
	default:
		if c.s.cfg.Password == nil {
			c.loginFailed(l.UserName, "")
			return c.s.violation("SQL login of %q refused: the server takes integrated logins only", l.UserName)
		}
		if err := c.s.cfg.Password(l.UserName, l.Password); err != nil {
			c.loginFailed(l.UserName, "")
			return c.s.violation("SQL login of %q refused: %v", l.UserName, err)
		}
		c.info.Method, c.info.User = "sql", l.UserName
	}
	db := l.Database
	if db == "" {
		db = "master"
	}
	if !c.s.hasDatabase(db) {
		msg := fmt.Sprintf("Cannot open database \"%s\" requested by the login. The login failed.", db)
		c.writeTokens(tds.AppendDone(tds.AppendError(nil, tds.TokenError, tds.ServerMessage{Number: 4060, State: 1, Class: 11, Text: msg, Server: "tdsserver"}), tds.TokenDone, tds.DoneError, 0, 0))
		return c.s.violation("%s", msg)
	}
	c.database = db
	c.info.Database = db
	size := int(l.PacketSize)
	if size == 0 {
		size = tds.DefaultPacketSize
	}
	if enc != tds.EncryptNotSup && size > 16383 {
		// SQL Server caps encrypted sessions' packets.
		size = 16383
	}
	c.info.PacketSize = uint32(size)
	out := tds.AppendEnvChange(nil, tds.EnvDatabase, db, "master")
	out = tds.AppendError(out, tds.TokenInfo, tds.ServerMessage{Number: 5701, State: 2, Text: fmt.Sprintf("Changed database context to '%s'.", db), Server: "tdsserver"})
	out = tds.AppendEnvChangeBytes(out, tds.EnvCollation, tds.DefaultCollation[:], nil)
	out = tds.AppendEnvChange(out, tds.EnvLanguage, "us_english", "")
	out = tds.AppendError(out, tds.TokenInfo, tds.ServerMessage{Number: 5703, State: 1, Text: "Changed language setting to us_english.", Server: "tdsserver"})
	out = tds.AppendLoginAck(out, c.version, ProgName, ProgVersion)
	out = tds.AppendEnvChange(out, tds.EnvPacketSize, fmt.Sprint(size), fmt.Sprint(tds.DefaultPacketSize))
	if _, ok := l.Feature(tds.FeatureUTF8Support); ok {
		out = tds.AppendFeatureExtAck(out, []tds.Feature{{ID: tds.FeatureUTF8Support, Data: []byte{1}}})
	}
	out = tds.AppendDone(out, tds.TokenDone, 0, 0, 0)
	if err := c.writeTokens(out); err != nil {
		return err
	}
	c.packetSize = size
	c.s.mu.Lock()
	c.s.logins = append(c.s.logins, c.info)
	c.s.mu.Unlock()
	return nil
}

// negotiate answers a client's encryption setting as SQL Server with a
// certificate does.
func (c *conn) negotiate(client byte) byte {
	if c.s.cfg.TLS == nil {
		return tds.EncryptNotSup
	}
	switch client {
	case tds.EncryptNotSup:
		if c.s.cfg.ForceEncryption {
			return tds.EncryptReq
		}
		return tds.EncryptNotSup
	case tds.EncryptOff:
		if c.s.cfg.ForceEncryption {
			return tds.EncryptOn
		}
		return tds.EncryptOff
	}
	return tds.EncryptOn
}

func (c *conn) loginFailed(user, detail string) {
	msg := fmt.Sprintf("Login failed for user '%s'.", user)
	if detail != "" {
		msg = detail
	}
	c.writeTokens(tds.AppendDone(tds.AppendError(nil, tds.TokenError, tds.ServerMessage{Number: 18456, State: 1, Class: 14, Text: msg, Server: "tdsserver"}), tds.TokenDone, tds.DoneError, 0, 0))
}

func (s *Server) hasDatabase(name string) bool {
	for _, d := range s.cfg.Databases {
		if strings.EqualFold(d, name) {
			return true
		}
	}
	return false
}

// run serves requests. Messages are read by their own goroutine so that an
// Attention can interrupt a running request.
func (c *conn) run() {
	c.msgs = make(chan msgOrErr, 4)
	c.stop = make(chan struct{})
	defer close(c.stop)
	go func() {
		r := tds.NewReader(c.rw)
		for {
			r.MaxPacket = c.packetSize
			m, err := r.ReadMessage()
			var me msgOrErr
			if err == nil {
				me = msgOrErr{typ: m.Type, status: m.Status, payload: append([]byte(nil), m.Payload...)}
			} else {
				me = msgOrErr{err: err}
			}
			select {
			case c.msgs <- me:
			case <-c.stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for me := range c.msgs {
		if me.err != nil {
			var pe *tds.ProtocolError
			if errors.As(me.err, &pe) {
				_ = c.fail("%v", me.err)
			}
			return
		}
		if me.status&tds.StatusIgnore != 0 {
			continue
		}
		if err := c.request(me); err != nil {
			return
		}
	}
}

func (c *conn) request(m msgOrErr) error {
	switch m.typ {
	case tds.PacketSQLBatch:
		_, text, err := tds.ParseSQLBatch(m.payload, c.version)
		if err != nil {
			return c.fail("%v", err)
		}
		c.s.mu.Lock()
		c.s.batches = append(c.s.batches, text)
		c.s.mu.Unlock()
		return c.batch(text)
	case tds.PacketRPC:
		_, calls, err := tds.ParseRPC(m.payload, c.version, 0)
		if err != nil {
			return c.fail("%v", err)
		}
		c.s.mu.Lock()
		c.s.rpcs = append(c.s.rpcs, calls...)
		c.s.mu.Unlock()
		return c.rpc(calls)
	case tds.PacketTransMgr:
		_, tm, err := tds.ParseTMRequest(m.payload, c.version)
		if err != nil {
			return c.fail("%v", err)
		}
		c.s.mu.Lock()
		c.s.tms = append(c.s.tms, tm)
		c.s.mu.Unlock()
		return c.transaction(tm)
	case tds.PacketAttention:
		// Nothing is running: the answer is the acknowledgement.
		c.s.mu.Lock()
		c.s.attentions++
		c.s.mu.Unlock()
		return c.writeTokens(tds.AppendDone(nil, tds.TokenDone, tds.DoneAttn, 0, 0))
	}
	return c.fail("%s message after login", tds.PacketTypeName(m.typ))
}

// wait sleeps for d unless an Attention arrives first; any other message
// meanwhile breaks the protocol (a client sends one request at a time).
func (c *conn) wait(ctx context.Context, d time.Duration) (cancelled bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case me := <-c.msgs:
		if me.err != nil {
			return false, me.err
		}
		if me.typ != tds.PacketAttention {
			return false, c.fail("%s sent while a request was running", tds.PacketTypeName(me.typ))
		}
		c.s.mu.Lock()
		c.s.attentions++
		c.s.mu.Unlock()
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
