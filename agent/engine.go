package agent

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// Engine speaks one database protocol. Serve runs one client connection to
// its end: it reads the protocol's startup, checks access through
// c.Env.Authorize, opens a Session, dials the database with credentials from
// c.Env.ClientCert, and proxies while decoding every message into events.
// Every error a client should see is reported in the protocol's own form.
type Engine interface {
	Serve(ctx context.Context, c *ClientConn) error
}

// PlaintextNegotiator is implemented by an engine whose clients speak first
// and ask for TLS inside their own protocol (PostgreSQL's SSLRequest). The
// server calls it when a connection does not start with a TLS handshake:
// it reads the client's request from conn and returns true once it answered
// that TLS follows, or false after answering with a protocol error. env
// records what the request was, when it is one to record.
type PlaintextNegotiator interface {
	NegotiatePlaintext(ctx context.Context, conn net.Conn, env *Env) (tlsNext bool, err error)
}

// ClientCertProvider returns the certificate the agent presents to a
// database for dbUser (for PostgreSQL and MySQL: signed by the db-client CA,
// common name = dbUser).
type ClientCertProvider func(ctx context.Context, db DatabaseInfo, dbUser string) (*tls.Certificate, error)

// ClientConn is a client connection after TLS: who it is and where it goes.
type ClientConn struct {
	// Conn is the TLS connection to the client.
	net.Conn
	// Identity comes from the verified user certificate.
	Identity identity.Identity
	// Database is the database the client asked for (by SNI); nil when
	// Reject is set.
	Database *Database
	// Reject, when set, is why the connection may not proceed (no or bad
	// certificate, unknown database). The engine reports it in its
	// protocol's form and closes; it may still serve requests that need no
	// database, such as a PostgreSQL cancel request.
	Reject error
	// ServerName is the SNI the client sent.
	ServerName string
	Env        *Env
}

// ResetOnClose makes the client connection end with a TCP reset instead of
// an orderly close, as the database's own connection did: a client tells
// the two apart (go-sql-driver/mysql reports a connection it could not
// write to as driver.ErrBadConn, one that broke after the write as
// "invalid connection"). It reaches the TCP connection under TLS and any
// wrapper that has a NetConn method.
func (c *ClientConn) ResetOnClose() {
	var conn net.Conn = c.Conn
	for conn != nil {
		switch x := conn.(type) {
		case *net.TCPConn:
			_ = x.SetLinger(0)
			return
		case interface{ NetConn() net.Conn }:
			conn = x.NetConn()
		default:
			return
		}
	}
}

// Env is what every engine shares: the cluster, the audit store, the access
// decision and the upstream credentials.
type Env struct {
	Cluster    string
	Recorder   Recorder
	Authorize  Authorizer
	ClientCert ClientCertProvider
	Logger     *slog.Logger
	// Background outlives client connections: sessions keep publishing
	// their last events under it after the client left.
	Background context.Context
	drains     sync.WaitGroup
	// life, when set, ends live sessions (ClientConn.OnTerminate).
	life *Lifecycle
	// rejects aggregates refusals made before any session (Reject).
	rejects *rejections
}

// NewSession opens an audited session for id on db as dbUser/dbName.
func (e *Env) NewSession(id identity.Identity, db *Database, dbUser, dbName string) *Session {
	bg := e.Background
	if bg == nil {
		bg = context.Background()
	}
	s := NewSession(SessionOptions{
		Cluster: e.Cluster, Recorder: e.Recorder, Identity: id, Database: db,
		DBUser: dbUser, DBName: dbName, Background: bg, Logger: e.logger(),
	})
	e.drains.Add(1)
	go func() {
		<-s.done
		e.drains.Done()
	}()
	return s
}

func (e *Env) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.Default()
	}
	return e.Logger
}
