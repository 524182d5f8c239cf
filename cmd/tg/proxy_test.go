package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupPacket encodes a protocol 3.0 startup message with pgproto3.
func startupPacket(t testing.TB, params map[string]string) []byte {
	t.Helper()
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeStartup(t testing.TB, pkt []byte) map[string]string {
	t.Helper()
	var m pgproto3.StartupMessage
	if err := m.Decode(pkt[4:]); err != nil {
		t.Fatalf("decode %q: %v", pkt, err)
	}
	if int(binary.BigEndian.Uint32(pkt)) != len(pkt) {
		t.Fatalf("length field %d, packet %d bytes", binary.BigEndian.Uint32(pkt), len(pkt))
	}
	return m.Parameters
}

func TestRewriteStartup(t *testing.T) {
	in := startupPacket(t, map[string]string{"user": "mallory", "database": "x", "application_name": "psql", "client_encoding": "UTF8"})
	out, err := rewriteStartup(in, "demo", "demo")
	if err != nil {
		t.Fatal(err)
	}
	got := decodeStartup(t, out)
	if got["user"] != "demo" || got["database"] != "demo" || got["application_name"] != "psql" || got["client_encoding"] != "UTF8" || len(got) != 4 {
		t.Fatalf("rewritten %v", got)
	}
	// Missing parameters are added; empty values leave the client's.
	out, err = rewriteStartup(startupPacket(t, map[string]string{"user": "app"}), "", "sales")
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeStartup(t, out); got["user"] != "app" || got["database"] != "sales" {
		t.Fatalf("rewritten %v", got)
	}
	// Malformed packets are refused, never passed on half-rewritten.
	bad := []byte{0, 0, 0, 13, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0}
	if _, err := rewriteStartup(bad, "demo", ""); err == nil || !strings.Contains(err.Error(), "no terminated value") {
		t.Fatalf("unterminated value: %v", err)
	}
	bad = []byte{0, 0, 0, 10, 0, 3, 0, 0, 'u', 's'}
	if _, err := rewriteStartup(bad, "demo", ""); err == nil || !strings.Contains(err.Error(), "not terminated") {
		t.Fatalf("unterminated parameters: %v", err)
	}
}

func TestReadStartupBounds(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0, 0, 0, 4}, "startup packet of 4 bytes"},
		{[]byte{0, 1, 0, 0, 0, 3, 0, 0}, "startup packet of 65536 bytes"},
		{[]byte("GET / HTTP/1.1\r\n"), "not a PostgreSQL client"},
	} {
		if _, err := readStartup(bytes.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
	ssl := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	pkt, err := readStartup(bytes.NewReader(ssl))
	if err != nil || binary.BigEndian.Uint32(pkt[4:]) != pgCodeSSL {
		t.Fatalf("SSLRequest: %v %x", err, pkt)
	}
}

func FuzzRewriteStartup(f *testing.F) {
	f.Add(startupPacket(f, map[string]string{"user": "a", "database": "b"}), "demo", "demo")
	f.Add(startupPacket(f, map[string]string{"user": "a", "options": "-c x=y"}), "", "n")
	f.Add([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0}, "u", "")
	f.Add([]byte{0, 0, 0, 13, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0}, "u", "d")
	f.Fuzz(func(t *testing.T, data []byte, user, db string) {
		pkt, err := readStartup(bytes.NewReader(data))
		if err != nil {
			return
		}
		if strings.IndexByte(user, 0) >= 0 || strings.IndexByte(db, 0) >= 0 {
			return
		}
		out, err := rewriteStartup(pkt, user, db)
		if err != nil {
			return
		}
		// Whatever was accepted comes out as a well-formed startup
		// packet that carries the values asked for.
		if int(binary.BigEndian.Uint32(out)) != len(out) || len(out) > pgMaxStartup {
			t.Fatalf("length field %d for %d bytes", binary.BigEndian.Uint32(out), len(out))
		}
		if binary.BigEndian.Uint32(out[4:8]) != pgproto3.ProtocolVersionNumber {
			// Other 3.x minors are rewritten alike; pgproto3 decodes
			// only 3.0 (and 3.2).
			return
		}
		var m pgproto3.StartupMessage
		if err := m.Decode(out[4:]); err != nil {
			t.Fatalf("rewritten packet does not decode: %v", err)
		}
		if user != "" && m.Parameters["user"] != user {
			t.Fatalf("user %q, want %q", m.Parameters["user"], user)
		}
		if db != "" && m.Parameters["database"] != db {
			t.Fatalf("database %q, want %q", m.Parameters["database"], db)
		}
	})
}

func TestEditServiceFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pg_service.conf")
	orig := "# mine\n[prod]\nhost=db.example\n\n[tollgate-old]\nhost=x\n\n[zeta]\nhost=z\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	set := func(name, text string) {
		t.Helper()
		err := editServiceFile(path, func(map[string]bool) map[string]string { return map[string]string{name: text} })
		if err != nil {
			t.Fatal(err)
		}
	}
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	set("tollgate-pg1", "[tollgate-pg1]\nhost=pg1\n")
	set("tollgate-old", "[tollgate-old]\nhost=new\n")
	want := "# mine\n[prod]\nhost=db.example\n\n[tollgate-old]\nhost=new\n\n[zeta]\nhost=z\n\n[tollgate-pg1]\nhost=pg1\n"
	if got := read(); got != want {
		t.Fatalf("after login:\n%s\nwant:\n%s", got, want)
	}
	set("tollgate-old", "")
	set("tollgate-pg1", "")
	if got := read(); got != "# mine\n[prod]\nhost=db.example\n\n[zeta]\nhost=z\n\n" {
		t.Fatalf("after logout:\n%q", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v: the file names key files, want 0600", fi.Mode(), err)
	}
}

func TestConnectHint(t *testing.T) {
	if got := connectHint("postgres", "127.0.0.1:5999", "demo", "demo"); got != `psql "host=127.0.0.1 port=5999 user=demo dbname=demo sslmode=disable"` {
		t.Fatal(got)
	}
	if got := connectHint("cockroachdb", "127.0.0.1:5999", "", ""); got != `psql "host=127.0.0.1 port=5999 user=DBUSER sslmode=disable"` {
		t.Fatal(got)
	}
	if got := connectHint("redis", "127.0.0.1:5999", "app", "2"); got != `redis-cli -h 127.0.0.1 -p 5999 --user app -a tollgate --no-auth-warning -n 2` {
		t.Fatal(got)
	}
}
