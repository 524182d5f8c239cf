package postgres_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

func TestStoreOutageRefusesStatements(t *testing.T) {
	s := newStack(t, "strict")
	ctx := context.Background()
	conn := s.connect(ctx, t)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "insert into accounts (id, owner) values (1, 'before')"); err != nil {
		t.Fatal(err)
	}
	s.NATS.Stop()
	_, err := conn.Exec(ctx, "insert into accounts (id, owner) values (2, 'during')")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "58000" || !strings.Contains(pe.Message, "audit store unavailable") {
		t.Fatalf("during the outage: %v", err)
	}
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	// The session goes on once the store is back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = conn.Exec(ctx, "insert into accounts (id, owner) values (3, 'after')")
		if err == nil {
			break
		}
		if !errors.As(err, &pe) || pe.Code != "58000" || time.Now().After(deadline) {
			t.Fatalf("after the outage: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var owners string
	if err := conn.QueryRow(ctx, "select string_agg(owner, ',' order by id) from accounts").Scan(&owners); err != nil || owners != "before,after" {
		t.Fatalf("rows %q %v", owners, err)
	}
	logged := s.statementLog(t)
	for _, e := range logged {
		if strings.Contains(e.Text, "during") {
			t.Fatalf("a refused statement reached the database: %q", e.Text)
		}
	}
	conn.Close(ctx)
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	refused := resultsWithCode(evs, "58000")
	during := 0
	// pgx sends a statement without arguments with the simple protocol.
	for _, e := range append(agenttest.OfType(evs, "db.session.postgres.execute"), agenttest.OfType(evs, "db.session.query")...) {
		if strings.Contains(e["db_query"].(string), "during") {
			during++
		}
	}
	if refused == 0 || during != 1 {
		t.Fatalf("refusals %d, refused statement events %d", refused, during)
	}
}

// rawSession opens a TLS connection with alice's certificate and starts a
// session as app, returning once the agent said ReadyForQuery.
func rawSession(t *testing.T, s *stack) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", s.Addr, s.TLS(t, "pg1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "app", "database": "postgres"}}).Encode(nil)
	if _, err := c.Write(sm); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			return c
		}
	}
}

func TestMalformedInputOverTLS(t *testing.T) {
	s := newStack(t, "strict")
	cases := map[string][]byte{
		"random bytes": {0x9c, 0x01, 0xfe, 0x33, 0x00, 0x10, 0x20},
		"over limit":   append([]byte{'Q', 0x10, 0, 0, 0}, "select 'oversized'"...),
	}
	n := 0
	for name, b := range cases {
		c := rawSession(t, s)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := pgproto3.NewFrontend(c, c).Receive()
		er, ok := m.(*pgproto3.ErrorResponse)
		if err != nil || !ok || er.Code != "08P01" || !strings.Contains(er.Message, "malformed") {
			t.Fatalf("%s: %v %+v", name, err, m)
		}
		n++
		s.WaitAudit(t, name, agenttest.Count("db.session.malformed_packet", n))
	}
	logged := s.statementLog(t)
	for _, e := range logged {
		if e.User == "app" {
			t.Fatalf("malformed input reached the database: %q", e.Text)
		}
	}
}

func TestGSSENCRequestRefused(t *testing.T) {
	s := newStack(t, "strict")
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := make([]byte, 8)
	binary.BigEndian.PutUint32(req, 8)
	binary.BigEndian.PutUint32(req[4:], 80877104)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := pgproto3.NewFrontend(c, c).Receive()
	if er, ok := m.(*pgproto3.ErrorResponse); err != nil || !ok || !strings.Contains(er.Message, "GSSAPI encryption is not supported") {
		t.Fatalf("%v %+v", err, m)
	}
}
