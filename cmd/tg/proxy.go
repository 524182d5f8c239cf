package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/protocol"
)

// dbFlags are the database user and name a command connects as.
type dbFlags struct {
	dbUser, dbName string
	// otp and browser answer a role's require_session_mfa: the code of
	// the authenticator, or "none" to print the security key's page.
	otp, browser string
}

// add defines --db-user and --db-name; for a tunnel they replace what
// clients send, elsewhere they say what to connect as.
func (f *dbFlags) add(c *cobra.Command, tunnel bool) {
	c.Flags().StringVar(&f.otp, "otp", "", "one-time code for a role that needs a second factor for each session (require_session_mfa; or TG_OTP)")
	c.Flags().StringVar(&f.browser, "browser", "", "none: print the URL of the security key's page instead of opening a browser (require_session_mfa)")
	if tunnel {
		c.Flags().StringVar(&f.dbUser, "db-user", "", "database user every connection logs in as, whatever the client sends")
		c.Flags().StringVar(&f.dbName, "db-name", "", "database name every connection uses, whatever the client sends")
		return
	}
	c.Flags().StringVar(&f.dbUser, "db-user", "", "database user to log in as (default: your only db_users trait, else the client's default)")
	c.Flags().StringVar(&f.dbName, "db-name", "", "database name (default: your only db_names trait, else the client's default)")
}

func init() {
	var (
		f      dbFlags
		tunnel bool
		port   int
	)
	proxyCmd := &cobra.Command{Use: "proxy", Short: "Local listeners that reach databases through Tollgate"}
	dbc := &cobra.Command{
		Use:   "db NAME --tunnel --port=P [--db-user=U] [--db-name=N]",
		Short: "Listen on 127.0.0.1:P and tunnel each connection to the database over mTLS",
		Long: `Listen on 127.0.0.1:P without TLS and carry every connection to the agent of
database NAME over TLS, presenting your certificate (the login under ~/.tg, or
-i FILE) and verifying the agent against the cluster's host CA. Any client
works unchanged against the local port with TLS off (psql sslmode=disable);
the tunnel is the encryption.

PostgreSQL and CockroachDB: a client's SSLRequest is answered 'N' locally,
and a cancel request (Ctrl-C in psql) travels through a new tunnel connection
to the agent, which forwards it to the right backend. --db-user and --db-name
replace the user and database of every startup message; without them the
client's own parameters are used. The tunnel runs until interrupted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !tunnel {
				return errors.New("--tunnel is required: the local listener is plaintext and carries connections in TLS to the agent (a TLS-terminating local proxy is not offered)")
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d is not a TCP port", port)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t, db, err := openTunnel(ctx, cmd, args[0], f, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Tunnel to %s (%s) through agent %s listening on %s\n", db.Name, db.Protocol, db.AgentAddr, t.Addr())
			fmt.Fprintf(out, "Connect with:\n  %s\n", connectHint(db.Protocol, t.Addr(), t.user, t.name))
			return t.Serve(ctx)
		},
	}
	dbc.Flags().BoolVar(&tunnel, "tunnel", false, "plaintext local listener, each connection carried in TLS to the agent (required)")
	dbc.Flags().IntVar(&port, "port", 0, "local port (0: any free port, printed)")
	f.add(dbc, true)
	proxyCmd.AddCommand(dbc)
	root.AddCommand(proxyCmd)
}

// findDatabase looks name up in the databases the identity's roles can
// reach, as the broker lists them.
func findDatabase(ctx context.Context, f *identity.File, name string) (api.Database, error) {
	c, err := apiClient(f)
	if err != nil {
		return api.Database{}, err
	}
	defer c.Close()
	dbs, err := c.MyDatabases(ctx)
	if err != nil {
		return api.Database{}, fmt.Errorf("listing databases at %s: %w", f.ProxyAddr, err)
	}
	names := make([]string, 0, len(dbs))
	for _, d := range dbs {
		if d.Name == name {
			if !d.Online {
				return api.Database{}, offlineError(name)
			}
			if len(d.Proxies) > 0 {
				// Reached through proxies, any of which routes to the
				// agent: go through the one this login knows rather than
				// the one the agent registered with, which may be down.
				d.AgentAddr = f.ProxyAddr
			}
			if d.AgentAddr == "" {
				return api.Database{}, fmt.Errorf("database %s is registered without an agent address: its agent must set db_service.public_addr", name)
			}
			return d, nil
		}
		names = append(names, d.Name)
	}
	slices.Sort(names)
	list := "none"
	if len(names) > 0 {
		list = fmt.Sprint(names)
	}
	return api.Database{}, fmt.Errorf("database %q is not among the live databases your roles reach (%s); see tg db ls", name, list)
}

// defaultTrait is the identity's only value of a trait, "" when it has
// none, several, or a wildcard.
func defaultTrait(id identity.Identity, trait string) string {
	vs := id.Traits[trait]
	if len(vs) == 1 && vs[0] != "*" && vs[0] != "" {
		return vs[0]
	}
	return ""
}

// tunnel carries local plaintext connections in TLS to an agent.
type tunnel struct {
	ln       net.Listener
	agent    string
	protocol string
	database string
	tls      *tls.Config
	// dbUser and dbName replace those of PostgreSQL startup messages when
	// set (--db-user, --db-name).
	dbUser, dbName string
	// user and name are what clients should connect as: the flags, else
	// the identity's only db_users and db_names traits.
	user, name string
	// sessionUntil is when the certificate issued after a second factor
	// (require_session_mfa) stops starting sessions; zero otherwise.
	sessionUntil time.Time

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// openTunnel resolves database name with the current identity and listens
// on listen.
func openTunnel(ctx context.Context, cmd *cobra.Command, name string, f dbFlags, listen string) (*tunnel, api.Database, error) {
	id, _, err := currentIdentity()
	if err != nil {
		return nil, api.Database{}, err
	}
	if err := checkExpiry(id); err != nil {
		return nil, api.Database{}, err
	}
	lctx, cancel := withTimeout(ctx)
	defer cancel()
	db, err := findDatabase(lctx, id, name)
	if err != nil {
		return nil, api.Database{}, err
	}
	user := f.dbUser
	if user == "" {
		user = defaultTrait(id.Identity, identity.TraitDBUsers)
	}
	if id, err = sessionFile(lctx, cmd, id, db, user, f); err != nil {
		return nil, api.Database{}, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, api.Database{}, fmt.Errorf("local listener: %w", err)
	}
	t := newTunnel(ln, db.AgentAddr, db.Protocol, db.Name, id)
	t.dbUser, t.dbName = f.dbUser, f.dbName
	t.user, t.name = user, f.dbName
	if db.SessionMFA {
		// The certificate is for this database user only: every
		// connection logs in as it.
		t.dbUser = user
		t.sessionUntil = id.Cert.Leaf.NotAfter
	}
	if t.name == "" {
		t.name = defaultTrait(id.Identity, identity.TraitDBNames)
	}
	return t, db, nil
}

func newTunnel(ln net.Listener, agentAddr, proto, database string, id *identity.File) *tunnel {
	return &tunnel{
		ln: ln, agent: agentAddr, protocol: proto, database: database, conns: map[net.Conn]struct{}{},
		tls: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The agent routes on the server name and its certificate
			// names every database it serves.
			ServerName:   protocol.ServerName(database),
			RootCAs:      id.CAs,
			Certificates: []tls.Certificate{id.Cert},
		},
	}
}

// Addr is the local address clients connect to.
func (t *tunnel) Addr() string { return t.ln.Addr().String() }

// Serve accepts until ctx ends, then closes every connection.
func (t *tunnel) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		t.ln.Close()
		t.mu.Lock()
		for c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
	})
	defer stop()
	defer t.wg.Wait()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		t.track(c, true)
		t.wg.Go(func() {
			defer t.track(c, false)
			defer c.Close()
			if err := t.handle(ctx, c); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "tg: tunnel connection from %s: %v\n", c.RemoteAddr(), err)
				if !t.sessionUntil.IsZero() && time.Now().After(t.sessionUntil) {
					fmt.Fprintf(os.Stderr, "tg: the certificate issued after the second factor started sessions until %s only: run tg again for a new one\n",
						t.sessionUntil.Local().Format("15:04:05"))
				}
			}
		})
	}
}

func (t *tunnel) track(c net.Conn, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

// dial opens a TLS connection to the agent.
func (t *tunnel) dial(ctx context.Context) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, Config: t.tls}
	c, err := d.DialContext(ctx, "tcp", t.agent)
	if isOfflineAlert(err) {
		return nil, offlineError(t.database)
	}
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", t.agent, err)
	}
	t.track(c, true)
	return c.(*tls.Conn), nil
}

func (t *tunnel) handle(ctx context.Context, c net.Conn) error {
	switch protocol.EngineOf(t.protocol) {
	case protocol.Postgres:
		return t.handlePostgres(ctx, c)
	}
	up, err := t.dial(ctx)
	if errors.Is(err, errOffline) && protocol.EngineOf(t.protocol) == protocol.MySQL {
		// A MySQL client waits for the server's greeting; an ERR packet
		// in its place is how a server refuses before the handshake (no
		// SQL state then).
		_, _ = c.Write(mysqlErrPacket(mysqlUnknownError, err.Error()))
	}
	if err != nil {
		return err
	}
	defer t.track(up, false)
	return pipe(c, up)
}

// errOffline is the proxy's answer for a database no agent serves.
var errOffline = errors.New("no agent connected")

// offlineError is the message every client sees for an offline
// database, whichever protocol carries it.
func offlineError(database string) error {
	return fmt.Errorf("database %s is offline: %w", database, errOffline)
}

// isOfflineAlert says whether err is the TLS alert a proxy sends for a
// registered database no agent serves (proxy.OfflineAlert,
// unrecognized_name). crypto/tls reports a received alert only as a
// net.OpError "remote error" with the alert's text.
func isOfflineAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && op.Err.Error() == "tls: unrecognized name"
}

// mysqlUnknownError is ER_UNKNOWN_ERROR: MySQL has no code of its own
// for a server that is not there behind a reachable port.
const mysqlUnknownError = 1105

// mysqlErrPacket is a MySQL ERR packet with sequence id 0, as a server
// sends it in place of its greeting: written here rather than taken from
// the agent's codec, which tg does not link.
func mysqlErrPacket(code uint16, msg string) []byte {
	payload := append([]byte{0xff, byte(code), byte(code >> 8)}, msg...)
	n := len(payload)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), 0}, payload...)
}

// pgCannotConnectNow is the SQLSTATE of a server that exists but takes no
// connection at the moment (57P03 cannot_connect_now).
const pgCannotConnectNow = "57P03"

// PostgreSQL startup request codes.
const (
	pgCodeCancel = 80877102
	pgCodeSSL    = 80877103
	pgCodeGSSENC = 80877104
	// pgMaxStartup is the largest startup packet PostgreSQL accepts.
	pgMaxStartup = 10000
)

func (t *tunnel) handlePostgres(ctx context.Context, c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var pkt []byte
	// The tunnel is the encryption: a client asking for TLS or GSSAPI
	// encryption is told no and goes on in plaintext to the tunnel.
	for i := 0; ; i++ {
		var err error
		if pkt, err = readStartup(c); err != nil {
			return err
		}
		code := binary.BigEndian.Uint32(pkt[4:8])
		if (code == pgCodeSSL || code == pgCodeGSSENC) && len(pkt) == 8 && i < 2 {
			if _, err := c.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		}
		if code>>16 == 3 && (t.dbUser != "" || t.dbName != "") {
			if pkt, err = rewriteStartup(pkt, t.dbUser, t.dbName); err != nil {
				return err
			}
		}
		break
	}
	_ = c.SetReadDeadline(time.Time{})
	// A cancel request (Ctrl-C in psql) arrives on a connection of its
	// own, so it gets a tunnel connection of its own: the agent matches
	// its key to the session's backend.
	up, err := t.dial(ctx)
	if errors.Is(err, errOffline) && binary.BigEndian.Uint32(pkt[4:8])>>16 == 3 {
		// The client waits for the answer to its startup message: an
		// ErrorResponse, as from a server that cannot take it.
		msg, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: pgCannotConnectNow, Message: err.Error()}).Encode(nil)
		_, _ = c.Write(msg)
	}
	if err != nil {
		return err
	}
	defer t.track(up, false)
	if _, err := up.Write(pkt); err != nil {
		up.Close()
		return fmt.Errorf("agent %s: %w", t.agent, err)
	}
	return pipe(c, up)
}

// readStartup reads one length-prefixed startup packet (length included).
func readStartup(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > pgMaxStartup {
		return nil, fmt.Errorf("startup packet of %d bytes (want 8 to %d): not a PostgreSQL client", n, pgMaxStartup)
	}
	pkt := make([]byte, n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(r, pkt[4:]); err != nil {
		return nil, err
	}
	return pkt, nil
}

// rewriteStartup replaces the user and database parameters of a protocol
// 3 startup packet (an empty value leaves the parameter as the client
// sent it).
func rewriteStartup(pkt []byte, user, database string) ([]byte, error) {
	body := pkt[8:]
	type kv struct{ k, v string }
	var params []kv
	for {
		i := indexNUL(body)
		if i < 0 {
			return nil, errors.New("startup packet: parameters not terminated")
		}
		if i == 0 {
			break
		}
		k := string(body[:i])
		body = body[i+1:]
		j := indexNUL(body)
		if j < 0 {
			return nil, fmt.Errorf("startup packet: parameter %q has no terminated value", k)
		}
		params = append(params, kv{k, string(body[:j])})
		body = body[j+1:]
	}
	set := func(k, v string) {
		if v == "" {
			return
		}
		for i := range params {
			if params[i].k == k {
				params[i].v = v
				return
			}
		}
		params = append(params, kv{k, v})
	}
	set("user", user)
	set("database", database)
	out := make([]byte, 8, len(pkt)+len(user)+len(database)+32)
	copy(out[4:8], pkt[4:8])
	for _, p := range params {
		out = append(out, p.k...)
		out = append(out, 0)
		out = append(out, p.v...)
		out = append(out, 0)
	}
	out = append(out, 0)
	if len(out) > pgMaxStartup {
		return nil, errors.New("startup packet too long after setting user and database")
	}
	binary.BigEndian.PutUint32(out[:4], uint32(len(out)))
	return out, nil
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// pipe copies both ways until either side ends, then closes both. A side
// that finished writing gets a half close where possible, so a
// request-then-close exchange (a cancel request) completes.
func pipe(client net.Conn, up *tls.Conn) error {
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(up, client)
		_ = up.CloseWrite()
		errc <- err
	}()
	go func() {
		_, err := io.Copy(client, up)
		if cw, ok := client.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		errc <- err
	}()
	err := <-errc
	// Once one direction ended the session is over in practice; give
	// the other a moment to deliver a final message (an ErrorResponse).
	timer := time.AfterFunc(5*time.Second, func() { client.Close(); up.Close() })
	err2 := <-errc
	timer.Stop()
	client.Close()
	up.Close()
	if err == nil || errors.Is(err, net.ErrClosed) {
		err = err2
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// connectHint is the command that connects a client to the tunnel.
func connectHint(proto, addr, dbUser, dbName string) string {
	host, port, _ := net.SplitHostPort(addr)
	if dbUser == "" {
		dbUser = "DBUSER"
	}
	switch protocol.EngineOf(proto) {
	case protocol.MySQL:
		s := fmt.Sprintf("mariadb --host=%s --port=%s --user=%s --skip-ssl", host, port, dbUser)
		if dbName != "" {
			s += " --database=" + dbName
		}
		return s
	case protocol.Redis:
		return "redis-cli " + strings.Join(redisCLIArgs(host, port, dbUser, dbName), " ")
	}
	s := fmt.Sprintf("host=%s port=%s user=%s", host, port, dbUser)
	if dbName != "" {
		s += " dbname=" + dbName
	}
	return fmt.Sprintf("psql %q", s+" sslmode=disable")
}
