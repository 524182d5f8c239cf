package mysql

import (
	"bytes"
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

func TestUseTargets(t *testing.T) {
	cases := []struct {
		q    string
		want []string
		ok   bool
	}{
		{"USE test", []string{"test"}, true},
		{"use `my db`", []string{"my db"}, true},
		{"USE `a``b`;", []string{"a`b"}, true},
		{"  /* c */ USE -- x\n secret", []string{"secret"}, true},
		{"# note\nUSE secret", []string{"secret"}, true},
		{"/*!40101 USE secret */", []string{"secret"}, true},
		{"/*M!100101 use secret*/", []string{"secret"}, true},
		{"SELECT 1; USE secret; SELECT 2", []string{"secret"}, true},
		{"SELECT 'USE secret'", nil, true},
		{"SELECT \"a;USE secret\"", nil, true},
		{"SELECT `x;use secret` FROM t", nil, true},
		{"SELECT 1 /* ; USE secret */", nil, true},
		{"SELECT 'it''s; USE x'", nil, true},
		{"SELECT 'a\\'; USE x'", nil, true},
		{"SELECT used FROM user", nil, true},
		{"USER()", nil, true},
		{"USE", nil, false},
		{"USE ;", nil, false},
		{"USE `unterminated", nil, false},
		{"USE a; USE b", []string{"a", "b"}, true},
		{"USE \"ansi\"", []string{"ansi"}, true},
		{"USE d\u00e9j\u00e0", []string{"d\u00e9j\u00e0"}, true},
	}
	for _, c := range cases {
		got, ok := useTargets(c.q)
		if ok != c.ok || !reflect.DeepEqual(got, c.want) {
			t.Errorf("useTargets(%q) = %q, %v; want %q, %v", c.q, got, ok, c.want, c.ok)
		}
		if len(c.want) > 0 && !isUse(c.q) {
			t.Errorf("isUse(%q) = false", c.q)
		}
	}
}

// recorder stores nothing and fails when told to.
type recorder struct {
	mu   sync.Mutex
	evs  []events.Event
	fail atomic.Bool
}

func (r *recorder) Publish(ctx context.Context, ev events.Event) error {
	return r.PublishBatch(ctx, []events.Event{ev})
}

func (r *recorder) PublishBatch(_ context.Context, evs []events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail.Load() {
		return errors.New("audit store unavailable: test")
	}
	r.evs = append(r.evs, evs...)
	return nil
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.evs {
		out = append(out, ev.Header().Type)
	}
	return out
}

// sink is a connection end that keeps what is written to it.
type sink struct {
	mu  sync.Mutex
	buf []byte
}

func (s *sink) Read([]byte) (int, error) { return 0, net.ErrClosed }
func (s *sink) Write(b []byte) (int, error) {
	s.mu.Lock()
	s.buf = append(s.buf, b...)
	s.mu.Unlock()
	return len(b), nil
}
func (s *sink) Close() error                     { return nil }
func (s *sink) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *sink) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *sink) SetDeadline(time.Time) error      { return nil }
func (s *sink) SetReadDeadline(time.Time) error  { return nil }
func (s *sink) SetWriteDeadline(time.Time) error { return nil }

func (s *sink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.buf...)
}

// testDecoder is a proxy whose server and client are sinks; the server
// never answers, so the queue is closed to keep the agent's own answers
// from waiting for it.
func testDecoder(tb testing.TB, rec *recorder) (*clientDecoder, *sink, *sink) {
	db, err := agent.NewDatabase(config.Database{Name: "my1", Protocol: "mysql", URI: "127.0.0.1:3306"})
	if err != nil {
		tb.Fatal(err)
	}
	id := identity.Identity{User: "alice", Roles: []string{"dev"}}
	sess := agent.NewSession(agent.SessionOptions{Cluster: "t", Recorder: rec, Identity: id, Database: db, DBUser: "app", DBName: "test"})
	tb.Cleanup(func() { sess.Close(nil) })
	client, server := &sink{}, &sink{}
	env := &agent.Env{Cluster: "t", Recorder: rec, Authorize: func(_ identity.Identity, _ agent.DatabaseInfo, _, dbName string) agent.Decision {
		return agent.Decision{Allowed: dbName == "test", Refused: "db_name", Rule: "test"}
	}}
	cc := &agent.ClientConn{Conn: client, Identity: id, Database: db, Env: env}
	caps := serverCaps
	p := newProxy(New(Options{}), sess, cc, caps, "app", "test")
	p.Server = server
	p.q.Close()
	return &clientDecoder{p: p, maxPacket: 1 << 20, maxParam: 64}, client, server
}

func packet(seq uint8, payload []byte) []byte {
	b, _ := wire.AppendPacket(nil, seq, payload)
	return b
}

func TestDecoderForwardsOnlyAuditedCommands(t *testing.T) {
	rec := &recorder{}
	d, client, server := testDecoder(t, rec)
	ctx := context.Background()
	q := packet(0, append([]byte{byte(wire.ComQuery)}, "SELECT 1"...))
	use := packet(0, append([]byte{byte(wire.ComQuery)}, "USE secret"...))
	in := append(append(append([]byte(nil), q...), use...), q[:5]...) // and the start of another
	consumed, need, err := d.process(ctx, in)
	if err != nil || consumed != len(q)+len(use) || need != len(q) {
		t.Fatalf("process: %d %d %v", consumed, need, err)
	}
	if got := server.bytes(); string(got) != string(q) {
		t.Fatalf("forwarded %q, want only the SELECT", got)
	}
	var ep wire.ErrPacket
	if reply := client.bytes(); len(reply) < 5 || ep.Decode(reply[4:]) != nil || ep.Code != 1044 || reply[3] != 1 {
		t.Fatalf("client got %x", reply)
	}
	if got := strings.Join(rec.types(), ","); got != "db.session.query,db.session.mysql.change_db" {
		t.Fatalf("events %s", got)
	}

	// The store fails: nothing is forwarded, the client is told why.
	rec.fail.Store(true)
	client.buf, server.buf = nil, nil
	if _, _, err := d.process(ctx, q); err != nil {
		t.Fatal(err)
	}
	if len(server.bytes()) != 0 {
		t.Fatal("a command was forwarded without its event stored")
	}
	if reply := client.bytes(); ep.Decode(reply[4:]) != nil || ep.Code != codeAuditUnavailable || !strings.Contains(ep.Message, "audit store unavailable") {
		t.Fatalf("client got %x", reply)
	}
}

func TestDecoderRefusesBadPackets(t *testing.T) {
	cases := map[string][]byte{
		"sequence":    packet(2, []byte{byte(wire.ComPing)}),
		"too large":   {0x00, 0x00, 0x20, 0x00, byte(wire.ComQuery)},
		"change user": packet(0, append([]byte{byte(wire.ComChangeUser)}, "root\x00\x00\x00"...)),
		"unknown":     packet(0, []byte{0x77}),
		"ping body":   packet(0, []byte{byte(wire.ComPing), 1}),
	}
	for name, in := range cases {
		d, _, server := testDecoder(t, &recorder{})
		_, _, err := d.process(context.Background(), in)
		var m *malformed
		if !errors.As(err, &m) {
			t.Fatalf("%s: %v", name, err)
		}
		if len(server.bytes()) != 0 {
			t.Fatalf("%s: forwarded", name)
		}
	}
}

// TestServerScannerSplits follows a response cut at every size, with a row
// larger than one packet (16 MiB and more): one result, every row counted.
func TestServerScannerSplits(t *testing.T) {
	rec := &recorder{}
	d, _, _ := testDecoder(t, rec)
	p := d.p
	caps := p.caps
	var resp []byte
	seq := uint8(1)
	resp, seq = wire.AppendPacket(resp, seq, wire.AppendLenEncInt(nil, 1))
	resp, seq = wire.AppendPacket(resp, seq, (&wire.ColumnDefinition41{Catalog: "def", Name: "b", Type: wire.TypeLongBlob}).Encode(nil, caps))
	big := wire.AppendLenEncBytes(nil, bytes.Repeat([]byte{'z'}, wire.MaxChunk+1000))
	resp, seq = wire.AppendPacket(resp, seq, wire.AppendLenEncString(nil, "small"))
	resp, seq = wire.AppendPacket(resp, seq, big)
	resp, _ = wire.AppendPacket(resp, seq, (&wire.OKPacket{Header: wire.EOFHeader, Status: wire.ServerStatusAutocommit}).Encode(nil, caps))
	for _, step := range []int{len(resp), 1 << 16, 4093, 7} {
		if step == 7 && testing.Short() {
			continue
		}
		q := newCmdQueue()
		p.q = q
		sc := &serverScanner{p: p, dec: wire.NewResponseDecoder(caps)}
		q.push([]pending{{cmd: wire.ComQuery, at: time.Now()}})
		for off := 0; off < len(resp); off += step {
			if err := sc.scan(resp[off:min(off+step, len(resp))]); err != nil {
				t.Fatalf("step %d at %d: %v", step, off, err)
			}
		}
		if sc.active || sc.completed != 1 {
			t.Fatalf("step %d: active %v, completed %d", step, sc.active, sc.completed)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var rows []uint64
		rec.mu.Lock()
		for _, ev := range rec.evs {
			if r, ok := ev.(*events.Result); ok {
				rows = append(rows, r.Rows)
			}
		}
		rec.mu.Unlock()
		if len(rows) == 4 {
			for _, n := range rows {
				if n != 2 {
					t.Fatalf("rows %v", rows)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("results %v", rows)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
