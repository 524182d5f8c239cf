package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestGenerateFuzzCorpus records a session with a real MariaDB under each
// capability set and writes its packets as seed corpora for the fuzz
// targets. It writes only with WIRE_UPDATE_CORPUS=1; otherwise it only
// checks that the committed corpora exist.
func TestGenerateFuzzCorpus(t *testing.T) {
	targets := []string{"FuzzReadPacket", "FuzzDecodeCommand", "FuzzDecodeHandshake", "FuzzResponse"}
	if os.Getenv("WIRE_UPDATE_CORPUS") != "1" {
		for _, target := range targets {
			entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
			if err != nil || len(entries) < 3 {
				t.Errorf("seed corpus testdata/fuzz/%s missing or tiny (%d files, %v): regenerate with WIRE_UPDATE_CORPUS=1", target, len(entries), err)
			}
		}
		return
	}
	addr := startMariaDB(t)
	setupUsers(t, addr)
	seen := map[string]bool{}
	write := func(target string, args ...any) {
		body := "go test fuzz v1\n"
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				body += fmt.Sprintf("[]byte(%q)\n", v)
			case uint64:
				body += fmt.Sprintf("uint64(%d)\n", v)
			}
		}
		sum := sha256.Sum256([]byte(body))
		name := "real-" + hex.EncodeToString(sum[:8])
		if seen[target+name] {
			return
		}
		seen[target+name] = true
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name, user string
		caps       Capabilities
	}{{"classic", nativeUser, capsClassic}, {"deprecate_eof", edUser, capsDeprEOF}, {"mariadb_ext", nativeUser, capsMariaExt}} {
		var cl *testClient
		var serverStream []byte
		var sseq uint8
		var resp []byte // framed server packets since the last command
		var lastCmd byte
		var inCommand bool
		flush := func() {
			if inCommand && len(resp) > 0 {
				write("FuzzResponse", uint64(lastCmd), uint64(cl.caps), resp)
			}
			resp = nil
		}
		hook := func(dir byte, p []byte) {
			if dir == 's' {
				// Numbered straight through so FuzzReadPacket reads it all.
				serverStream, _ = AppendPacket(serverStream, sseq, p)
				sseq++
				if cl == nil {
					write("FuzzDecodeHandshake", append([]byte(nil), p...))
				} else {
					resp, _ = AppendPacket(resp, uint8(1+len(splitPackets(resp))), p)
				}
				return
			}
			if cl == nil {
				write("FuzzDecodeHandshake", append([]byte(nil), p...))
				return
			}
			flush()
			cmd := append([]byte(nil), p...)
			if cmd[0] == byte(ComStmtExecute) && len(cmd) >= 5 {
				// The fuzz tracker's statement n has n parameters.
				if info, ok := cl.stmts.LookupStmt(binary.LittleEndian.Uint32(cmd[1:])); ok && info.NumParams < 32 {
					binary.LittleEndian.PutUint32(cmd[1:], uint32(info.NumParams))
				}
			}
			write("FuzzDecodeCommand", cmd, uint64(cl.caps))
			lastCmd, inCommand = cmd[0], true
		}
		c, err := dialMariaDBCapture(t, addr, tc.user, userPass, tc.caps, hook)
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzReadPacket", serverStream)
		serverStream, sseq = nil, 0
		cl = c
		if _, _, err := c.do(&InitDB{Schema: "wiretest"}); err != nil {
			t.Fatal(err)
		}
		table := "gen_" + tc.name
		testTextCommands(t, c, table)
		testPreparedStatements(t, c, table)
		testOtherCommands(t, c, table)
		flush()
		write("FuzzReadPacket", serverStream)
	}
}
