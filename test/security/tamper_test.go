package security

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/faults"
)

// The attacks on the stored trail with the broker's own NATS identity,
// the one that may still write anywhere in AUDIT: a message cannot be
// removed, and a frame forged with a key the host CA never certified is
// named by `tollgate audit verify`.
func TestTamperBrokerCredentials(t *testing.T) {
	w := newWorld(t)
	for i := range 2 {
		if err := w.query(w.userCert, w.userKey, fmt.Sprintf("SELECT 'tamper %d'", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.waitEnded(2)
	if out, err := w.stdout("audit", "verify"); err != nil || !strings.HasPrefix(out, "intact: ") {
		t.Fatalf("untouched trail: %v\n%s", err, out)
	}
	_, js, _ := w.as(natsserver.Broker)
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Cleanup(cancel)
		return c
	}

	t.Run("DeleteAMessage", func(t *testing.T) {
		st, err := js.Stream(ctx(), events.AuditStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx())
		if err != nil {
			t.Fatal(err)
		}
		victim := info.State.FirstSeq + 1
		// Refused either way: by the stream (DenyDelete) or by the
		// identity's permissions (no answer).
		if err := st.DeleteMsg(ctx(), victim); err == nil {
			// The stream let it go: verify must see the hole.
			out, err := w.stdout("audit", "verify")
			if err == nil || !strings.Contains(out, fmt.Sprintf("stream sequences %d to %d are missing", victim, victim)) {
				t.Fatalf("message %d deleted and verify did not name the hole: %v\n%s", victim, err, out)
			}
		}
		after, err := st.Info(ctx())
		if err != nil {
			t.Fatal(err)
		}
		if after.State.Msgs != info.State.Msgs {
			t.Fatalf("AUDIT held %d messages, now %d", info.State.Msgs, after.State.Msgs)
		}
	})

	t.Run("ForgedFrameSignedOutsideTheHostCA", func(t *testing.T) {
		rogue := rogueSigner(t)
		sid := "01FORGEDSESSION00000000000"
		evs := forgedSession(t, rogue, sid)
		run := "forged-run"
		frame, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: events.NewID(), Src: "h1", Run: run, FSeq: 0, Prev: events.FrameGenesis(run)}, evs, rogue)
		if err != nil {
			t.Fatal(err)
		}
		f, err := events.DecodeFrame(frame)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: "audit." + faults.Cluster + "." + events.FrameSubject + ".h1", Data: frame, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, f.Header.ID)
		if _, err := js.PublishMsg(ctx(), msg); err != nil {
			t.Fatal(err)
		}
		out, err := w.stdout("audit", "verify")
		if err == nil {
			t.Fatalf("verify passed a forged frame:\n%s", out)
		}
		for _, want := range []string{"frame " + f.Header.ID, "not certified by the host CA", sid + "-0 " + sid + "-1 " + sid + "-2"} {
			if !strings.Contains(out, want) {
				t.Fatalf("verify output lacks %q:\n%s", want, out)
			}
		}
		// The same frame checked against the host CA given as a file.
		ca := w.hostCAFile()
		if out, err := w.stdout("audit", "verify", "--host-ca", ca); err == nil || !strings.Contains(out, "frame "+f.Header.ID) {
			t.Fatalf("verify --host-ca: %v\n%s", err, out)
		}
	})
}

// One byte of a stored statement changed in the JetStream file store
// while the daemon is down: `tollgate audit verify` fails and names the
// frame holding the event (signed frames), or the hole the file store
// leaves when its checksum drops the damaged message.
func TestTamperFileStoreByteFlip(t *testing.T) {
	w := newWorld(t)
	const marker = "flip-target-7"
	for _, q := range []string{"SELECT 'before'", "SELECT '" + marker + "'", "SELECT 'after 1'", "SELECT 'after 2'"} {
		if err := w.query(w.userCert, w.userKey, q); err != nil {
			t.Fatal(err)
		}
	}
	w.waitEnded(4)
	if out, err := w.stdout("audit", "verify"); err != nil || !strings.HasPrefix(out, "intact: ") {
		t.Fatalf("untouched trail: %v\n%s", err, out)
	}
	if err := w.node.Stop(); err != nil {
		t.Fatal(err)
	}
	id := flipInAuditStore(t, w.dataDir, marker)
	if err := w.node.Start(); err != nil {
		t.Fatalf("%v\n%s", err, w.node.LogTail())
	}
	out, err := w.stdout("audit", "verify")
	if err == nil {
		t.Fatalf("verify passed a trail with event %s changed on disk:\n%s", id, out)
	}
	if !strings.Contains(out, id) && !strings.Contains(out, "are missing") && !strings.Contains(out, "could not be read") {
		t.Fatalf("verify failed without naming event %s or a hole:\n%s", id, out)
	}
	t.Logf("event %s changed on disk; verify says:\n%s", id, out)
}

// flipInAuditStore changes the first stored occurrence of marker in the
// AUDIT stream's message blocks (its last byte, 7 to 8) and returns the id
// of the event holding it.
func flipInAuditStore(t *testing.T, dataDir, marker string) string {
	t.Helper()
	var blocks []string
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".blk") && strings.Contains(p, string(filepath.Separator)+"AUDIT"+string(filepath.Separator)) {
			blocks = append(blocks, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range blocks {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte(marker))
		if i < 0 {
			continue
		}
		// The event's id is the last "id" before the statement.
		j := bytes.LastIndex(b[:i], []byte(`{"id":"`))
		if j < 0 {
			t.Fatalf("%s: no event id before %q", p, marker)
		}
		idStart := j + len(`{"id":"`)
		id := string(b[idStart : idStart+bytes.IndexByte(b[idStart:], '"')])
		b[i+len(marker)-1] = '8'
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return id
	}
	t.Fatalf("%q is in none of the AUDIT blocks %v (compressed or encrypted store?)", marker, blocks)
	return ""
}

// waitEnded waits until the trail holds n ended sessions, as audit verify
// counts them.
func (w *world) waitEnded(n int) {
	w.t.Helper()
	re := regexp.MustCompile(`\((\d+) ended`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := w.stdout("audit", "verify")
		if m := re.FindStringSubmatch(out); m != nil {
			if got, _ := strconv.Atoi(m[1]); got >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("want %d ended sessions: %v\n%s", n, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hostCAFile writes the host CA certificate as `tollgate auth export`
// prints it.
func (w *world) hostCAFile() string {
	w.t.Helper()
	p := w.dir + "/host-ca.pem"
	if out, err := w.tollgate("auth", "export", "--type=host", "--out", p); err != nil {
		w.t.Fatalf("auth export: %v\n%s", err, out)
	}
	return p
}

// rogueSigner is a host key certified by a CA of the attacker's own.
func rogueSigner(t *testing.T) *events.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "all-in-one"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forgedSession is a whole session, chained and sealed as a writer would,
// by s.
func forgedSession(t *testing.T, s *events.Signer, sid string) [][]byte {
	t.Helper()
	now := time.Now().UTC()
	var out [][]byte
	prev := events.ChainGenesis(sid)
	for i, typ := range []string{"db.session.start", "db.session.query", "db.session.end"} {
		ev := fmt.Appendf(nil, `{"id":"%s-%d","type":%q,"code":"TGDB002I","time":%q,"cluster":%q,"sid":%q,"ei":%d,"prev":%q`,
			sid, i, typ, now.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), faults.Cluster, sid, i, prev)
		if typ == "db.session.end" {
			ev = fmt.Appendf(ev, `,"signer":%q`, s.CertB64())
			sig, err := s.Sign(append(ev[:len(ev):len(ev)], '}'))
			if err != nil {
				t.Fatal(err)
			}
			ev = fmt.Appendf(ev, `,"seal":%q}`, sig)
		} else {
			ev = append(ev, '}')
		}
		prev = events.EventHash(ev)
		out = append(out, ev)
	}
	return out
}
