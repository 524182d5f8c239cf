package mysql_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
)

// rawSession logs in over TLS with alice's certificate as app on test and
// returns once the agent said OK.
func rawSession(t *testing.T, s *stack) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", s.Addr, s.agentTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(c, 0)
	w := wire.NewWriter(c)
	p, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	var hs wire.HandshakeV10
	if err := hs.Decode(p); err != nil {
		t.Fatal(err)
	}
	if hs.Capabilities.Has(wire.ClientSSL) || !hs.Capabilities.Has(wire.ClientCompress) || hs.Capabilities.Has(wire.ClientZstdCompressionAlgorithm) {
		t.Fatalf("inside TLS the agent offers no TLS, zlib compression and not zstd: %s", hs.Capabilities)
	}
	caps := wire.ClientProtocol41 | wire.ClientSecureConnection | wire.ClientPluginAuth | wire.ClientConnectWithDB | wire.ClientDeprecateEOF
	hr := wire.HandshakeResponse41{Capabilities: caps, MaxPacketSize: 1 << 24, CharacterSet: 45, Username: "app",
		AuthResponse: []byte("ignored-by-the-agent"), Database: "test", AuthPlugin: wire.PluginNativePassword}
	w.SetSeq(1)
	if err := w.WritePacket(hr.Encode(nil)); err != nil {
		t.Fatal(err)
	}
	r.SetSeq(2)
	p, err = r.ReadPacket()
	if err != nil || len(p) == 0 || p[0] != wire.OKHeader {
		t.Fatalf("login: %v %x", err, p)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

func TestMalformedInputClosesTheConnection(t *testing.T) {
	s := newStack(t, stackOptions{maxPacket: 1 << 20})
	query := func(seq uint8, q string) []byte {
		b, _ := wire.AppendPacket(nil, seq, append([]byte{byte(wire.ComQuery)}, q...))
		return b
	}
	changeUser, _ := wire.AppendPacket(nil, 0, append([]byte{byte(wire.ComChangeUser)}, "root\x00\x00test\x00"...))
	unknown, _ := wire.AppendPacket(nil, 0, []byte{0x40, 1, 2})
	cases := []struct {
		name  string
		in    []byte
		code  uint16
		event string
	}{
		{"random bytes", []byte{0x9c, 0x01, 0xfe, 0x33, 0x00, 0x10, 0x20}, 1156, "sequence id"},
		{"over limit", append([]byte{0x00, 0x00, 0x20, 0x00, byte(wire.ComQuery)}, "SELECT 'oversized'"...), 1153, "over the limit"},
		{"wrong sequence id", query(3, "SELECT 'misnumbered'"), 1156, "sequence id 3"},
		{"change user", changeUser, 1227, "COM_CHANGE_USER"},
		{"unknown command", unknown, 1047, "unknown command 0x40"},
	}
	for i, tc := range cases {
		c := rawSession(t, s)
		if _, err := c.Write(tc.in); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The agent answers with one ERR whatever sequence id it carries,
		// then closes.
		var hdr [4]byte
		if _, err := readFull(c, hdr[:]); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)
		if _, err := readFull(c, body); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var ep wire.ErrPacket
		if err := ep.Decode(body); err != nil || ep.Code != tc.code {
			t.Fatalf("%s: %v %+v", tc.name, err, ep)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("%s: the connection stayed open", tc.name)
		}
		evs := s.WaitAudit(t, tc.name, agenttest.Count("db.session.malformed_packet", i+1))
		mp := agenttest.OfType(evs, "db.session.malformed_packet")[i]
		if reason := mp["reason"].(string); !strings.Contains(reason, tc.event) {
			t.Fatalf("%s: reason %q", tc.name, reason)
		}
		if tc.name == "change user" && mp["packet_prefix"] != nil {
			t.Fatalf("the COM_CHANGE_USER packet (it holds a password scramble) was recorded: %v", mp)
		}
	}
	evs := s.WaitAudit(t, "session ends", agenttest.Count("db.session.end", len(cases)))
	agenttest.CheckGapless(t, evs)
	logged, err := s.db.GeneralLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range logged {
		if e.Command != "Connect" && e.Command != "Quit" && strings.HasPrefix(e.User, "app@") {
			t.Fatalf("malformed input reached the database: %+v", e)
		}
	}
}

func readFull(c *tls.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
