package postgres_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// sendCancel sends a CancelRequest to the agent, over TLS with alice's
// certificate or in plaintext, and waits until the agent closed it.
func (s *stack) sendCancel(t *testing.T, overTLS bool, pid uint32, secret []byte) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	if overTLS {
		c, err = tls.Dial("tcp", s.Addr, s.TLS(t, "pg1"))
	} else {
		c, err = net.Dial("tcp", s.Addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := binary.BigEndian.AppendUint32(nil, uint32(12+len(secret)))
	msg = binary.BigEndian.AppendUint32(msg, 80877102)
	msg = binary.BigEndian.AppendUint32(msg, pid)
	msg = append(msg, secret...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}

// backendPIDAndCancel checks that the client was told the backend's
// process id and that its cancel, through the agent, stops a statement;
// it returns the process id.
func backendPIDAndCancel(ctx context.Context, t *testing.T, s *stack, conn *pgx.Conn) uint32 {
	t.Helper()
	var backend uint32
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	if pid := conn.PgConn().PID(); pid != backend {
		t.Fatalf("client told process id %d, pg_backend_pid() is %d", pid, backend)
	}
	cancelled := make(chan error, 1)
	go func() {
		waitSleeping(t, s)
		cancelled <- conn.PgConn().CancelRequest(ctx)
	}()
	_, err := conn.Exec(ctx, "select pg_sleep(30)")
	if cerr := <-cancelled; cerr != nil {
		t.Fatal(cerr)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("sleep: %v, want query_canceled", err)
	}
	return backend
}

func TestClientSeesBackendPID(t *testing.T) {
	s := newStack(t, "strict")
	ctx := context.Background()
	conn := s.connect(ctx, t)
	defer conn.Close(ctx)
	secret := conn.PgConn().SecretKey()
	// A cancel through the agent still stops the statement.
	backend := backendPIDAndCancel(ctx, t, s, conn)

	// Cancels with a wrong key, over TLS and without, cancel nothing and
	// are recorded.
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "select pg_sleep(2)")
		done <- err
	}()
	waitSleeping(t, s)
	wrong := append([]byte(nil), secret...)
	wrong[0] ^= 0xff
	s.sendCancel(t, true, backend, wrong)
	s.sendCancel(t, false, backend, wrong)
	// The right secret under another process id is no key either.
	s.sendCancel(t, true, backend+1, secret)
	if err := <-done; err != nil {
		t.Fatalf("a cancel with a wrong key stopped the statement: %v", err)
	}
	// They are refusals before any session, aggregated per source: the
	// first is stored at once, the others counted when the window ends.
	evs := s.WaitAudit(t, "unknown-key cancels", func(evs []map[string]any) bool {
		var n float64
		for _, e := range agenttest.OfType(evs, "db.session.rejected") {
			if e["reason"] == "unknown_cancel_key" {
				n += e["count"].(float64)
			}
		}
		return n == 3
	})
	for _, e := range agenttest.OfType(evs, "db.session.postgres.cancel") {
		if e["success"] != true || e["db_backend_pid"] != float64(backend) {
			t.Errorf("cancel %v", e)
		}
	}
	for _, e := range agenttest.OfType(evs, "db.session.rejected") {
		if e["reason"] != "unknown_cancel_key" {
			continue
		}
		if e["code"] != "TGDB006W" || e["sid"] != nil || e["client_ip"] != "127.0.0.1" || !strings.Contains(e["error"].(string), "key no session holds") {
			t.Errorf("unknown-key cancel %v", e)
		}
	}

	// pg_terminate_backend on the process id the client holds ends this
	// session.
	admin, err := pgx.Connect(ctx, s.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var ok bool
	if err := admin.QueryRow(ctx, "select pg_terminate_backend($1)", int32(conn.PgConn().PID())).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	var (
		one   int
		pgErr *pgconn.PgError
	)
	err = conn.QueryRow(ctx, "select 1").Scan(&one)
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
		t.Fatalf("after pg_terminate_backend: %v, want admin_shutdown", err)
	}
	s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
}

// A client asking for protocol 3.2 (longer cancel keys) gets what the
// database negotiates, the backend's process id, and a working cancel.
func TestProtocol32Negotiated(t *testing.T) {
	s := newStack(t, "strict")
	ctx := context.Background()
	cfg := s.pgxConfig(t, "pg1")
	cfg.MaxProtocolVersion = "3.2"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	backendPIDAndCancel(ctx, t, s, conn)
	t.Logf("secret key of %d bytes", len(conn.PgConn().SecretKey()))
}
