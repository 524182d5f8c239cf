// Package redis is the agent's Redis engine. Clients reach it over the
// agent's TLS with a user certificate (SNI names the database); the engine
// reads the client's first command to learn the db user (the user an AUTH
// or HELLO ... AUTH names, else Redis's "default"), checks access, connects
// to Redis with TLS and a db-client certificate (tls-auth-clients yes),
// signs in as that ACL user itself, and then proxies while decoding every
// command into a db.session.query event. In strict mode a read's commands
// are forwarded only after their events are stored.
//
// The client's own password is never forwarded nor recorded: the
// certificate proves who the user is, and Redis's ACL users reached
// through Tollgate are nopass users that only holders of a db-client
// certificate can reach at all.
package redis

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/events"
)

// DefaultUser is the db user of a session whose client did not name one:
// Redis's own default user.
const DefaultUser = "default"

// DefaultMaxArg bounds the recorded rendering of one argument.
const DefaultMaxArg = 64 << 10

// Options tunes the engine; zero values take the defaults.
type Options struct {
	Limits Limits
	// MaxArg bounds the recorded text of one argument (DefaultMaxArg).
	MaxArg int
	// StartupTimeout bounds waiting for the client's first command and
	// signing in upstream (30s).
	StartupTimeout time.Duration
	// DialTimeout bounds connecting to the database (10s).
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Engine is the Redis engine; one serves every Redis database of an agent.
type Engine struct {
	opt Options
	log *slog.Logger
}

var _ agent.Engine = (*Engine)(nil)

// New returns an engine.
func New(o Options) *Engine {
	o.Limits = o.Limits.withDefaults()
	agent.SetDefault(&o.MaxArg, DefaultMaxArg)
	o.StartupTimeout, o.DialTimeout, o.Logger = agent.EngineDefaults(o.StartupTimeout, o.DialTimeout, o.Logger)
	return &Engine{opt: o, log: o.Logger}
}

// Serve runs one client connection.
func (e *Engine) Serve(ctx context.Context, c *agent.ClientConn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(e.opt.StartupTimeout))
	buf := make([]byte, clientBuffer)
	w := 0
	var first Command
	for {
		cmd, size, need, err := ParseCommand(buf[:w], e.opt.Limits)
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) && c.Reject == nil {
				e.early(c, DefaultUser, malformedEvent(pe.Error(), int64(w), buf[:w]), "ERR "+pe.Error()+"; tollgate closed the connection and forwarded nothing of it")
			}
			return err
		}
		if size > 0 && len(cmd.Args) == 0 {
			// An empty inline line: Redis ignores it, so does the agent.
			w = copy(buf, buf[size:w])
			continue
		}
		if size > 0 {
			first = cmd
			break
		}
		if need > len(buf) {
			nb := make([]byte, need)
			copy(nb, buf[:w])
			buf = nb
		}
		n, rerr := c.Read(buf[w:])
		w += n
		if rerr != nil && n == 0 {
			if w > 0 && errors.Is(rerr, io.EOF) && c.Reject == nil {
				e.early(c, DefaultUser, malformedEvent(fmt.Sprintf("truncated: the client closed the connection %d bytes into its first command", w), int64(w), buf[:w]), "")
			}
			return rerr
		}
	}
	if c.Reject != nil {
		// Answered once the client's first command is read: closing with
		// it unread would reset the connection before the client could
		// read why.
		e.refuseAll(c, buf[:w], "ERR tollgate: "+c.Reject.Error())
		return c.Reject
	}
	dbUser, ok := namedUser(first.Args)
	if !ok {
		dbUser = DefaultUser
	}
	sess, err := c.Start(ctx, agent.SessionRequest{DBUser: dbUser, DBName: "0", Deny: agent.Denial})
	if err != nil {
		var denied *agent.DeniedError
		if errors.As(err, &denied) {
			e.refuseAll(c, buf[:w], "NOPERM tollgate: "+denied.Message)
		} else {
			e.refuseAll(c, buf[:w], "ERR tollgate: "+err.Error()+"; the command was not sent to the database")
		}
		return err
	}
	p := newProxy(e, sess, c, dbUser)
	up, err := e.connect(ctx, c, dbUser)
	if err != nil {
		sess.Close(p.End("database connection failed: " + err.Error()))
		e.refuseAll(c, buf[:w], "ERR tollgate: "+err.Error())
		return err
	}
	_ = c.SetDeadline(time.Time{})
	p.bind(up)
	c.OnTerminate(sess, p.Terminate)
	return p.run(ctx, buf[:w])
}

// maxRefused bounds how many commands a refused connection is answered.
const maxRefused = 16

// refuseAll answers the commands in b, and those the client sends after
// them, with msg until it closes, for a while: a client library that
// pipelines its handshake (HELLO, then AUTH when HELLO fails, CLIENT
// SETINFO) reads the reason instead of a reset connection.
func (e *Engine) refuseAll(c *agent.ClientConn, b []byte, msg string) {
	reply := AppendError(nil, msg)
	buf := make([]byte, 4096)
	w := copy(buf, b)
	_ = c.SetDeadline(time.Now().Add(min(e.opt.StartupTimeout, 5*time.Second)))
	for answered := 0; answered < maxRefused; {
		cmd, size, need, err := ParseCommand(buf[:w], e.opt.Limits)
		if err != nil || need > len(buf) {
			return
		}
		if size > 0 {
			w = copy(buf, buf[size:w])
			if len(cmd.Args) > 0 {
				if _, err := c.Write(reply); err != nil {
					return
				}
				answered++
			}
			continue
		}
		n, rerr := c.Read(buf[w:])
		w += n
		if rerr != nil && n == 0 {
			return
		}
	}
}

// namedUser returns the user an AUTH or HELLO ... AUTH names: AUTH with
// one argument (a password) names Redis's default user.
func namedUser(args [][]byte) (string, bool) {
	switch commandName(args) {
	case "AUTH":
		switch len(args) {
		case 2:
			return DefaultUser, true
		case 3:
			return string(args[1]), true
		}
	case "HELLO":
		for i := 2; i+2 < len(args); i++ {
			if strings.EqualFold(string(args[i]), "AUTH") {
				return string(args[i+1]), true
			}
		}
	}
	return "", false
}

// early records a refusal before a session exists, in a session of its
// own (so the event has a sid and ei like every session event), and tells
// the client msg when there is one.
func (e *Engine) early(c *agent.ClientConn, dbUser string, ev events.Event, msg string) {
	if c.Env != nil && c.Env.Recorder != nil {
		s := c.Env.NewSession(c.Identity, c.Database, dbUser, "0")
		_ = s.Gate(context.Background(), ev)
		s.Close(nil)
	}
	if msg != "" {
		_, _ = c.Write(AppendError(nil, msg))
	}
}

func malformedEvent(reason string, length int64, prefix []byte) *events.MalformedPacket {
	ev := &events.MalformedPacket{Direction: "client", Reason: reason, Length: length}
	// The prefix may hold a password: it is recorded only when none of
	// the commands that carry one is in it.
	if len(prefix) > 0 {
		up := bytes.ToUpper(prefix[:min(len(prefix), 64)])
		if !bytes.Contains(up, []byte("AUTH")) && !bytes.Contains(up, []byte("HELLO")) && !bytes.Contains(up, []byte("ACL")) && !bytes.Contains(up, []byte("CONFIG")) && !bytes.Contains(up, []byte("MIGRATE")) {
			ev.Prefix = fmt.Sprintf("%x", prefix[:min(len(prefix), 64)])
		}
	}
	return ev
}

// connect dials the database with TLS and the db-client certificate for
// dbUser and signs in as dbUser. The password the agent sends is a
// placeholder: Tollgate's ACL users are nopass, reachable only with a
// certificate Redis trusts (tls-auth-clients yes).
func (e *Engine) connect(ctx context.Context, c *agent.ClientConn, dbUser string) (net.Conn, error) {
	db := c.Database
	cert, err := c.Env.ClientCert(ctx, db.Info(), dbUser)
	if err != nil {
		return nil, fmt.Errorf("cannot get a client certificate for database %q: %w", db.Config.Name, err)
	}
	dctx, cancel := context.WithTimeout(ctx, e.opt.DialTimeout)
	defer cancel()
	d := tls.Dialer{Config: db.UpstreamTLS(cert)}
	conn, err := d.DialContext(dctx, "tcp", db.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to database %q: %w", db.Config.Name, err)
	}
	_ = conn.SetDeadline(time.Now().Add(e.opt.DialTimeout))
	if _, err := conn.Write(AppendCommand(nil, []byte("AUTH"), []byte(dbUser), []byte("tollgate"))); err != nil {
		conn.Close()
		return nil, fmt.Errorf("database %q: signing in as %q: %w", db.Config.Name, dbUser, err)
	}
	r, err := readReply(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("database %q: signing in as %q: %w", db.Config.Name, dbUser, err)
	}
	if r.Type == '-' || r.Type == '!' {
		conn.Close()
		return nil, fmt.Errorf("database %q refused the sign-in as ACL user %q: %s (an ACL user reached through Tollgate must exist, be on and be nopass)", db.Config.Name, dbUser, r.Err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// readReply reads one reply of the sign-in; nothing else is in flight.
func readReply(conn net.Conn) (*Reply, error) {
	var s ReplyScanner
	var got *Reply
	buf := make([]byte, 4096)
	for got == nil {
		n, err := conn.Read(buf)
		if n > 0 {
			if serr := s.Feed(buf[:n], func(_, _ int, r *Reply) {
				if got == nil {
					got = r
				}
			}); serr != nil {
				return nil, serr
			}
		}
		if err != nil && got == nil {
			return nil, err
		}
	}
	return got, nil
}
