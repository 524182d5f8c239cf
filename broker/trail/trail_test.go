package trail

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// testSigner is a broker's signer: a key and its certificate from the
// host CA of a fresh data dir, and that CA's certificate.
func testSigner(t *testing.T) (*events.Signer, *x509.Certificate) {
	t.Helper()
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := cas.IssueHost(key.Public(), "broker", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root, err := cas.Cert(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

func testJS(t *testing.T, ctx context.Context) jetstream.JetStream {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// appendState stores a user.create in STATE as the broker's store does.
func appendState(t *testing.T, ctx context.Context, js jetstream.JetStream, user string) {
	t.Helper()
	ev := &events.UserCreate{Name: user, UserRoles: []string{"reader"}}
	ev.User = "admin"
	if err := events.Stamp(ev, "test"); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.StateSubject("user", user), b); err != nil {
		t.Fatal(err)
	}
}

// copyOf is one AUDIT message of the trail, decoded.
type copyOf struct {
	msg   *jetstream.RawStreamMsg
	frame *events.Frame
}

func auditCopies(t *testing.T, ctx context.Context, js jetstream.JetStream) []copyOf {
	t.Helper()
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []copyOf
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		f, err := events.DecodeFrame(m.Data)
		if err != nil {
			t.Fatalf("AUDIT %d: %v", seq, err)
		}
		out = append(out, copyOf{m, f})
	}
	return out
}

// The copies are signed frames of one event each, chained within a run,
// naming the STATE sequence of the original in their header and in the
// Tollgate-State-Seq header.
func TestCopiesAreSignedChainedFrames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := testJS(t, ctx)
	signer, hostCA := testSigner(t)
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	tr, err := Start(ctx, js, WithSigner(signer))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		appendState(t, ctx, js, u)
	}
	if err := tr.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	state, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	copies := auditCopies(t, ctx, js)
	if len(copies) != 3 {
		t.Fatalf("%d messages in AUDIT, want 3 copies", len(copies))
	}
	run := copies[0].frame.Header.Run
	prev := events.FrameGenesis(run)
	for i, c := range copies {
		h := c.frame.Header
		if h == nil {
			t.Fatalf("copy %d is not a frame: %s", i, c.msg.Data)
		}
		orig, err := state.GetMsg(ctx, h.StateSeq)
		if err != nil {
			t.Fatalf("copy %d names STATE sequence %d: %v", i, h.StateSeq, err)
		}
		if h.StateSeq != uint64(i+1) || c.msg.Header.Get(HeaderStateSeq) != strconv.FormatUint(h.StateSeq, 10) {
			t.Errorf("copy %d: state_seq %d, header %q", i, h.StateSeq, c.msg.Header.Get(HeaderStateSeq))
		}
		if len(c.frame.Events) != 1 || !bytes.Equal(c.frame.Events[0], orig.Data) {
			t.Errorf("copy %d holds %q, STATE %d holds %s", i, c.frame.Events, h.StateSeq, orig.Data)
		}
		var ev struct{ ID string }
		_ = json.Unmarshal(orig.Data, &ev)
		if id := c.msg.Header.Get(jetstream.MsgIDHeader); id != ev.ID || h.ID != ev.ID {
			t.Errorf("copy %d: Nats-Msg-Id %q, frame id %q, want the event's %q", i, id, h.ID, ev.ID)
		}
		if h.Src != Src || c.msg.Subject != "audit.test."+events.FrameSubject+"."+Src {
			t.Errorf("copy %d: src %q, subject %s", i, h.Src, c.msg.Subject)
		}
		if h.Run != run || h.FSeq != uint64(i) || h.Prev != prev {
			t.Errorf("copy %d: run %s fseq %d prev %s, want run %s fseq %d prev %s", i, h.Run, h.FSeq, h.Prev, run, i, prev)
		}
		prev = c.frame.Hash()
		if c.frame.Trailer == nil {
			t.Fatalf("copy %d is not signed", i)
		}
		cert, err := events.ParseCert(c.frame.Trailer.Cert)
		if err != nil || !cert.Equal(signer.Cert) {
			t.Fatalf("copy %d: certificate %v", i, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("copy %d: the certificate is not the host CA's: %v", i, err)
		}
		if err := events.VerifySignature(cert, c.frame.Signed, c.frame.Trailer.Sig); err != nil {
			t.Errorf("copy %d: %v", i, err)
		}
		forged := bytes.Replace(c.frame.Signed, []byte(`"reader"`), []byte(`"writer"`), 1)
		if events.VerifySignature(cert, forged, c.frame.Trailer.Sig) == nil {
			t.Errorf("copy %d: the signature verifies over changed bytes", i)
		}
	}
	tr.Stop()

	// A new run copying everything again (its consumer lost) adds nothing:
	// AUDIT drops the copies by event id. Its chain starts with its first
	// frame actually stored.
	if err := state.DeleteConsumer(ctx, Consumer); err != nil {
		t.Fatal(err)
	}
	tr, err = Start(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	appendState(t, ctx, js, "dave")
	if err := tr.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	copies = auditCopies(t, ctx, js)
	if len(copies) != 4 {
		t.Fatalf("%d messages in AUDIT after copying again, want 4", len(copies))
	}
	h := copies[3].frame.Header
	if h == nil || h.Run == run || h.FSeq != 0 || h.Prev != events.FrameGenesis(h.Run) || h.StateSeq != 4 {
		t.Fatalf("first frame of the second run: %+v, want fseq 0 from its genesis, state_seq 4", h)
	}
	if copies[3].frame.Trailer != nil {
		t.Fatal("a trail without a signer signed its frame")
	}
}

// A STATE message that is no event is not copied, and the copying goes on.
func TestNotAnEventIsNotCopied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := testJS(t, ctx)
	tr, err := Start(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	if _, err := js.Publish(ctx, events.StateSubject("user", "x"), []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	appendState(t, ctx, js, "erin")
	if err := tr.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	copies := auditCopies(t, ctx, js)
	if len(copies) != 1 || copies[0].frame.Header.StateSeq != 2 || copies[0].frame.Header.FSeq != 0 {
		t.Fatalf("copies %+v, want one frame of STATE sequence 2 at fseq 0", copies)
	}
}
