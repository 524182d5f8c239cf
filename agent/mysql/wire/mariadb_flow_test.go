package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// resultRows decodes a result set captured by testClient.do: text rows, or
// binary rows when binary is set. cached are the columns to use when the
// server skipped the metadata (MARIADB_CLIENT_CACHE_METADATA).
func resultRows(t testing.TB, caps Capabilities, packets [][]byte, binary bool, cached []ColumnDefinition41) ([]ColumnDefinition41, [][]Value) {
	t.Helper()
	if len(packets) == 0 {
		t.Fatal("no packets in result")
	}
	n, _, used, err := ReadLenEncInt(packets[0])
	if err != nil {
		t.Fatalf("column count: %v", err)
	}
	metadata := byte(1)
	if caps.Has(MariaDBClientCacheMetadata) || caps.Has(ClientOptionalResultsetMetadata) {
		metadata = packets[0][used]
	}
	i := 1
	cols := cached
	if metadata == 1 {
		cols = make([]ColumnDefinition41, n)
		for j := range cols {
			if err := cols[j].Decode(packets[i], caps); err != nil {
				t.Fatalf("column %d: %v", j, err)
			}
			i++
		}
	}
	if len(cols) != int(n) {
		t.Fatalf("%d columns known, result has %d", len(cols), n)
	}
	if !caps.Has(ClientDeprecateEOF) {
		if !IsEOF(packets[i]) {
			t.Fatalf("expected EOF after column definitions, got % x", packets[i])
		}
		i++
	}
	var rows [][]Value
	for ; i < len(packets)-1; i++ {
		var row []Value
		if binary {
			row, err = DecodeBinaryRow(packets[i], cols, nil)
		} else {
			row, err = DecodeTextRow(packets[i], len(cols), nil)
		}
		if err != nil {
			t.Fatalf("row %d: %v", len(rows), err)
		}
		rows = append(rows, row)
	}
	return cols, rows
}

func (c *testClient) query(sql string) [][]Value {
	c.t.Helper()
	resp, packets := c.mustDo(&Query{Query: sql})
	if resp.Results != 1 {
		c.t.Fatalf("%q: %d results", sql, resp.Results)
	}
	_, rows := resultRows(c.t, c.caps, packets, false, nil)
	if uint64(len(rows)) != resp.Rows {
		c.t.Fatalf("%q: decoder counted %d rows, result has %d", sql, resp.Rows, len(rows))
	}
	return rows
}

var setupOnce sync.Once

const (
	nativeUser = "wire_native"
	edUser     = "wire_ed"
	userPass   = "s3cret-Pässword"
)

// setupUsers creates the test users once: one per auth plugin.
func setupUsers(t *testing.T, addr string) {
	t.Helper()
	var err error
	setupOnce.Do(func() {
		var root *testClient
		root, err = dialMariaDB(t, addr, "root", "", "", capsDeprEOF)
		if err != nil {
			return
		}
		for _, q := range []string{
			"INSTALL SONAME 'auth_ed25519'",
			"CREATE USER " + nativeUser + "@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('" + userPass + "')",
			"CREATE USER " + edUser + "@localhost IDENTIFIED VIA ed25519 USING PASSWORD('" + userPass + "')",
			"CREATE DATABASE wiretest",
			"GRANT ALL ON wiretest.* TO " + nativeUser + "@localhost",
			"GRANT ALL ON wiretest.* TO " + edUser + "@localhost",
		} {
			resp, _, e := root.do(&Query{Query: q})
			if e == nil && resp.Failed {
				e = fmt.Errorf("%s: %d %s", q, resp.ErrorCode, resp.ErrorMessage)
			}
			if e != nil {
				err = e
				return
			}
		}
	})
	if err != nil {
		t.Fatalf("creating test users: %v", err)
	}
}

func TestMariaDBGreeting(t *testing.T) {
	addr := startMariaDB(t)
	c, err := dialMariaDB(t, addr, "root", "", "", capsDeprEOF)
	if err != nil {
		t.Fatal(err)
	}
	hs := c.hs
	if hs.ProtocolVersion != 10 || !strings.Contains(hs.ServerVersion, "MariaDB") || !hs.IsMariaDB() {
		t.Errorf("greeting: version %d %q", hs.ProtocolVersion, hs.ServerVersion)
	}
	if len(hs.AuthPluginData) != 20 || hs.AuthPluginName != PluginNativePassword || hs.ConnectionID == 0 {
		t.Errorf("greeting: %d bytes of scramble, plugin %q, connection %d", len(hs.AuthPluginData), hs.AuthPluginName, hs.ConnectionID)
	}
	for _, f := range []Capabilities{ClientProtocol41, ClientSecureConnection, ClientPluginAuth, ClientDeprecateEOF, MariaDBClientProgress, MariaDBClientStmtBulkOperations} {
		if !hs.Capabilities.Has(f) {
			t.Errorf("greeting lacks %s: %s", f, hs.Capabilities)
		}
	}
	if hs.Capabilities.Has(ClientMySQL) {
		t.Errorf("MariaDB greeting has CLIENT_MYSQL set")
	}
	// The real greeting re-encodes to the same bytes.
	raw := captureGreeting(t, addr)
	var again HandshakeV10
	if err := again.Decode(raw); err != nil {
		t.Fatal(err)
	}
	if enc := again.Encode(nil); !bytes.Equal(enc, raw) {
		t.Errorf("greeting re-encoded differs:\n got % x\nwant % x", enc, raw)
	}
}

func captureGreeting(t *testing.T, addr string) []byte {
	t.Helper()
	var raw []byte
	c, err := dialMariaDBCapture(t, addr, "root", "", capsDeprEOF, func(dir byte, p []byte) {
		if raw == nil && dir == 's' {
			raw = bytes.Clone(p)
		}
	})
	if err != nil || c == nil {
		t.Fatal(err)
	}
	return raw
}

func dialMariaDBCapture(t testing.TB, addr, user, password string, caps Capabilities, capture func(byte, []byte)) (*testClient, error) {
	// dialMariaDB with a capture hook installed before the greeting.
	saved := testCaptureHook
	testCaptureHook = capture
	defer func() { testCaptureHook = saved }()
	return dialMariaDB(t, addr, user, password, "", caps)
}

func TestMariaDBAuthPlugins(t *testing.T) {
	addr := startMariaDB(t)
	setupUsers(t, addr)
	for _, tc := range []struct{ user, plugin string }{{nativeUser, PluginNativePassword}, {edUser, PluginEd25519}} {
		t.Run(tc.plugin, func(t *testing.T) {
			var sawSwitch string
			c, err := dialMariaDBCapture(t, addr, tc.user, userPass, capsDeprEOF, func(dir byte, p []byte) {
				if dir == 's' && len(p) > 0 && p[0] == AuthSwitchHeader {
					var sw AuthSwitchRequest
					if sw.Decode(p) == nil {
						sawSwitch = sw.PluginName
					}
				}
			})
			if err != nil {
				t.Fatalf("authenticating %s: %v", tc.user, err)
			}
			if tc.plugin == PluginEd25519 && sawSwitch != PluginEd25519 {
				t.Errorf("expected an auth switch to %s, saw %q", PluginEd25519, sawSwitch)
			}
			rows := c.query("SELECT CURRENT_USER()")
			if len(rows) != 1 || rows[0][0].Text != tc.user+"@localhost" {
				t.Errorf("CURRENT_USER() = %v", rows)
			}
			// Wrong password: ERR 1045 with SQLSTATE 28000.
			_, err = dialMariaDB(t, addr, tc.user, userPass+"x", "", capsDeprEOF)
			var e *ErrPacket
			if !errors.As(err, &e) || e.Code != 1045 || e.SQLState != "28000" {
				t.Errorf("wrong password: %v, want ERR 1045 (28000)", err)
			}
		})
	}
	// The ed25519 key we derive is the one the server stored.
	root, err := dialMariaDB(t, addr, "root", "", "", capsDeprEOF)
	if err != nil {
		t.Fatal(err)
	}
	rows := root.query("SELECT JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv WHERE User='" + edUser + "'")
	if len(rows) != 1 || rows[0][0].Text != Ed25519AuthString(userPass) {
		t.Errorf("stored ed25519 key %v, we derive %s", rows, Ed25519AuthString(userPass))
	}
}
