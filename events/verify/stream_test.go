package verify

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// A stream holding both shapes, single events as stored before frames and
// signed frames, verifies as a whole and one session at a time.
func TestStreamFramesAndLegacy(t *testing.T) {
	s, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(t.TempDir(), "js"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range wholeSession("old", 3) {
		if _, err := js.Publish(ctx, "audit.c.old.db.session.query", ev); err != nil {
			t.Fatal(err)
		}
	}
	ca := newTestCA(t, "good")
	_, msgs := trail(t, ca)
	for _, m := range msgs {
		f, err := events.DecodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: "audit.c." + events.FrameSubject + ".h1", Data: m, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, f.Header.ID)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Stream(ctx, js, StreamOptions{Stream: events.AuditStream, HostCA: ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Intact() || sum.Events != 16 || sum.Frames != 4 || sum.Unsigned != 3 || sum.Sealed != 2 || sum.LastSeq != 7 {
		t.Fatalf("%s\n%s", sum.Line(), defectLines(sum))
	}
	sum, err = Stream(ctx, js, StreamOptions{Stream: events.AuditStream, HostCA: ca.cert, SID: "SA"})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Intact() || sum.Sessions != 1 || sum.Events != 6 || sum.Frames != 4 {
		t.Fatalf("%s\n%s", sum.Line(), defectLines(sum))
	}
	// Checked against another host CA, every frame and seal is named.
	sum, err = Stream(ctx, js, StreamOptions{Stream: events.AuditStream, HostCA: newTestCA(t, "other").cert})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Defects) != 4+2 {
		t.Fatalf("%s\n%s", sum.Line(), defectLines(sum))
	}
	mustFind(t, sum, "seq 4 frame F-r1-0", "not certified by the host CA")
}

// Messages removed from a stream that allows it: a hole in the middle and
// the tail are both named.
func TestStreamRemovedMessages(t *testing.T) {
	s, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(t.TempDir(), "js"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range wholeSession("a", 6) {
		if _, err := js.Publish(ctx, "t.a", ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, seq := range []uint64{3, 6} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Stream(ctx, js, StreamOptions{Stream: "T"})
	if err != nil {
		t.Fatal(err)
	}
	mustFind(t, sum, "seq 4", "stream sequences 3 to 3 are missing")
	mustFind(t, sum, "seq 6", "stream sequences 6 to 6 are missing: the stream's last messages were removed")
}
