package syslog_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/exporters/internal/rsyslogtest"
	"github.com/tollgate-db/tollgate/exporters/internal/testpki"
	"github.com/tollgate-db/tollgate/exporters/syslog"
	"github.com/tollgate-db/tollgate/schemas"
	"github.com/tollgate-db/tollgate/test/harness"
)

// received waits until rsyslog has written each of ids times times and
// checks each line: the event id in the structured data is the id of the
// event in the message, the MSGID is its code, the message is the stored
// event and valid against its schema.
func received(t *testing.T, r *rsyslogtest.Rsyslog, ids []string, times int) map[string]int {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string]int{}
		lines := r.Lines(t)
		for _, l := range lines {
			var ev struct {
				ID, Type, Code string
			}
			if err := json.Unmarshal(l.Msg, &ev); err != nil {
				t.Fatalf("message is not the JSON event: %v: %q", err, l.Msg)
			}
			if !strings.Contains(l.SD, `id="`+ev.ID+`"`) || !strings.Contains(l.SD, `type="`+ev.Type+`"`) {
				t.Fatalf("structured data %s does not name event %s of type %s", l.SD, ev.ID, ev.Type)
			}
			if l.MsgID != ev.Code {
				t.Fatalf("MSGID %q, want the event code %q", l.MsgID, ev.Code)
			}
			if err := schemas.Validate(l.Msg); err != nil {
				t.Fatalf("event %s as received: %v", ev.ID, err)
			}
			got[ev.ID]++
		}
		missing := 0
		for id := range want {
			// rsyslog writes what it acknowledged a little later: wait
			// for every copy expected.
			if got[id] < times {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslog wrote %d lines; %d of %d events missing", len(lines), missing, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEveryEventOverTCPAndTLS(t *testing.T) {
	pki := testpki.New(t)
	r := rsyslogtest.Start(t, rsyslogtest.Options{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 2000, func(i int) events.Event {
		q := exportertest.Query(i)
		// Values that need escaping in structured data and JSON.
		q.Query += ` -- "quoted" \ back]slash ` + "é"
		return q
	})
	_, stop := e.Run(t, fmt.Sprintf(`name: sys
type: syslog
settings:
  address: %s
  facility: authpriv
  linger: 20ms`, r.Addr))
	e.Settled(t, "sys", 60*time.Second)
	stop()
	_, stopTLS := e.Run(t, fmt.Sprintf(`name: systls
type: syslog
settings:
  address: %s
  tls:
    ca_file: %s
  linger: 20ms`, r.TLSAddr, pki.CAFile))
	e.Settled(t, "systls", 60*time.Second)
	stopTLS()
	got := received(t, r, ids, 2)
	for _, id := range ids {
		if got[id] < 2 {
			t.Fatalf("event %s received %d times, want once over TCP and once over TLS", id, got[id])
		}
	}
}

// A receiver that is not there yet: the exporter retries, then delivers
// everything once it listens.
func TestReceiverComesLater(t *testing.T) {
	port := harness.FreePort(t)
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 500, nil)
	x, _ := e.Run(t, fmt.Sprintf(`name: late
type: syslog
settings:
  address: 127.0.0.1:%d
  linger: 20ms
  backoff_min: 20ms
  backoff_max: 200ms`, port))
	deadline := time.Now().Add(20 * time.Second)
	for x.Stats().Retries < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := x.Stats(); st.Delivered != 0 || st.Retries < 3 {
		t.Fatalf("stats %+v before the receiver started", st)
	}
	r := rsyslogtest.Start(t, rsyslogtest.Options{Port: port})
	e.Settled(t, "late", 60*time.Second)
	received(t, r, ids, 1)
}

// A message over max_message_bytes is dead-lettered, not cut.
func TestOversizedMessageDeadLettered(t *testing.T) {
	r := rsyslogtest.Start(t, rsyslogtest.Options{})
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 100, func(i int) events.Event {
		q := exportertest.Query(i)
		if i == 42 {
			q.Query = "SELECT '" + strings.Repeat("y", 20000) + "'"
		}
		return q
	})
	x, _ := e.Run(t, fmt.Sprintf(`name: small
type: syslog
settings:
  address: %s
  max_message_bytes: 8192
  linger: 20ms`, r.Addr))
	e.Settled(t, "small", 60*time.Second)
	got := received(t, r, append(append([]string(nil), ids[:42]...), ids[43:]...), 1)
	if got[ids[42]] != 0 {
		t.Fatal("the oversized event was sent")
	}
	if dl := e.DeadLetters(t, "small"); len(dl) != 1 || dl[0].Header.Get("Tollgate-Event-Id") != ids[42] {
		t.Fatalf("dead letters %d, want event %s", len(dl), ids[42])
	}
	if st := x.Stats(); st.DeadLetters != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Events stored in frames and alone reach rsyslog once each, in stream
// order; an oversized event in a frame is dead-lettered alone.
func TestFramesInOrder(t *testing.T) {
	r := rsyslogtest.Start(t, rsyslogtest.Options{})
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.FillFrames(t, 1000, func(i int) events.Event {
		q := exportertest.Query(i)
		q.SID = fmt.Sprintf("s%d", i%4)
		if i == 420 {
			q.Query = "SELECT '" + strings.Repeat("y", 20000) + "'"
		}
		return q
	})
	x, _ := e.Run(t, fmt.Sprintf(`name: frames
type: syslog
settings:
  address: %s
  max_message_bytes: 8192
  linger: 20ms`, r.Addr))
	e.Settled(t, "frames", 60*time.Second)
	want := append(append([]string(nil), ids[:420]...), ids[421:]...)
	got := received(t, r, want, 1)
	var order []string
	for _, l := range r.Lines(t) {
		var ev struct{ ID, Type string }
		_ = json.Unmarshal(l.Msg, &ev)
		if ev.Type != "exporter.dead_letter" { // the report, stored after them
			order = append(order, ev.ID)
		}
	}
	if !slices.Equal(order, want) {
		t.Fatalf("rsyslog got %d events, not the %d sent in stream order", len(order), len(want))
	}
	if got[ids[420]] != 0 {
		t.Fatal("the oversized event was sent")
	}
	dl := e.DeadLetters(t, "frames")
	if len(dl) != 1 || dl[0].Header.Get(exporters.HeaderEventID) != ids[420] || dl[0].Header.Get(exporters.HeaderFrameEvent) == "" {
		t.Fatalf("dead letters %d, want event %s of a frame", len(dl), ids[420])
	}
	if st := x.Stats(); st.DeadLetters != 1 || st.Delivered != uint64(len(want))+1 { // and the report
		t.Fatalf("stats %+v", st)
	}
}

func TestMain(m *testing.M) {
	exportertest.MaybeChild()
	os.Exit(m.Run())
}

// BenchmarkDrain drains TOLLGATE_BENCH_EVENTS events (100,000 by default;
// the notes' figures use 1,000,000) through the syslog sink in a child
// process to a real rsyslogd writing them to a file.
func BenchmarkDrain(b *testing.B) {
	n := exportertest.BenchEvents(100000)
	r := rsyslogtest.Start(b, rsyslogtest.Options{})
	e := exportertest.Start(b, exportertest.Options{})
	e.Fill(b, n, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench%d", i)
		took, rss := e.Drain(b, name, fmt.Sprintf("name: %s\ntype: syslog\nsettings:\n  address: %s", name, r.Addr))
		exportertest.Report(b, n, took, rss)
	}
}

func record(t testing.TB, id, typ, code string) exporters.Record {
	q := exportertest.Query(1)
	if err := events.Stamp(q, "c"); err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(q)
	env, err := format.Scan(ev)
	if err != nil {
		t.Fatal(err)
	}
	if id != "" {
		env.ID, env.Type, env.Code = id, typ, code
	}
	return exporters.Record{Envelope: env, Event: ev, Data: ev}
}

// BenchmarkAppendMessage is the sink's cost per event: one RFC 5424 message.
func BenchmarkAppendMessage(b *testing.B) {
	s, err := syslog.New(syslog.Config{Address: "127.0.0.1:1"})
	if err != nil {
		b.Fatal(err)
	}
	r := record(b, "", "", "")
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		dst = s.AppendMessage(dst[:0], &r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

var msgRE = regexp.MustCompile(`^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ([!-~]{1,255}) ([!-~]{1,48}) - ([!-~]{1,32}) \[([^ =\]"]{1,32})((?: [a-z]+="(?:[^"\\\]]|\\["\\\]])*")+)\] `)

// FuzzAppendMessage: whatever the event's id, type and code hold, the
// message is well-formed RFC 5424 and its structured data gives them back.
func FuzzAppendMessage(f *testing.F) {
	f.Add("01J0ABC", "db.session.query", "TGDB002W")
	f.Add(`a"b]c\d`, "x y", "bad code with spaces")
	s, err := syslog.New(syslog.Config{Address: "127.0.0.1:1", Hostname: "gw1", Facility: "auth"})
	if err != nil {
		f.Fatal(err)
	}
	paramRE := regexp.MustCompile(`([a-z]+)="((?:[^"\\\]]|\\["\\\]])*)"`)
	f.Fuzz(func(t *testing.T, id, typ, code string) {
		r := record(t, id, typ, code)
		r.ID, r.Type, r.Code = id, typ, code
		out := s.AppendMessage(nil, &r)
		m := msgRE.FindSubmatch(out)
		if m == nil {
			t.Fatalf("not RFC 5424: %q", out)
		}
		if !bytes.HasSuffix(out, r.Data) || len(out) != len(m[0])+len(r.Data) {
			t.Fatalf("MSG is not the event: %q", out)
		}
		params := map[string]string{}
		for _, p := range paramRE.FindAllSubmatch(m[7], -1) {
			v := strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\]`, `]`).Replace(string(p[2]))
			params[string(p[1])] = v
		}
		if params["id"] != id || params["type"] != typ {
			t.Fatalf("structured data %q gives id %q type %q", m[7], params["id"], params["type"])
		}
		pri, _ := strconv.Atoi(string(m[1]))
		if pri/8 != 4 {
			t.Fatalf("facility %d, want auth (4)", pri/8)
		}
	})
}
