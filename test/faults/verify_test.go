package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// TestCleanRunVerifies proves that a clean run of pgbench (simple and
// prepared) and sysbench through the agent leaves a trail that `tollgate
// audit verify` finds intact, on the live stream and in what the file
// exporters wrote (native, OCSF and CloudEvents), and that a changed
// statement in a copy of the native file is caught.
func TestCleanRunVerifies(t *testing.T) {
	began := time.Now()
	bin := binaries(t)
	if _, err := exec.LookPath("sysbench"); err != nil {
		t.Fatal("sysbench is not installed (Debian: sysbench)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	otherFormats := []string{format.OCSF, format.CloudEvents}
	s := NewStack(t, bin, StackOptions{Exporter: true, MariaDB: true, ExportFormats: otherFormats})
	ledger := &Ledger{JS: s.JS, PG: s.PG, MariaDB: s.MariaDB, ExportFile: s.ExportFile}
	tun, err := NewTunnel(s.AgentAddr, MyName, s.HostCAFile, s.UserCertFile, s.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if err := SysbenchPrepare(ctx, tun.Addr()); err != nil {
		t.Fatalf("%v\nagent:\n%s", err, s.Agent.LogTail())
	}

	// The load: a few seconds of each, at once.
	until := time.Now().Add(4 * time.Second)
	simple := &Pgbench{Env: s.ClientEnv(), Clients: 4, Rate: 100}
	prepared := &Pgbench{Env: s.ClientEnv(), Clients: 4, Rate: 100, Mode: "prepared"}
	sb := &Sysbench{Addr: tun.Addr(), Threads: 2, Rate: 10}
	var wg sync.WaitGroup
	for _, run := range []func(){
		func() { simple.Run(ctx, until) },
		func() { prepared.Run(ctx, until) },
		func() { sb.Run(ctx, until) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); run() }()
	}
	wg.Wait()
	for name, n := range map[string]int64{"pgbench simple": simple.Transactions(), "pgbench prepared": prepared.Transactions(), "sysbench": sb.Transactions()} {
		if n == 0 {
			t.Fatalf("%s ran no transaction\nagent:\n%s", name, s.Agent.LogTail())
		}
	}
	for name, errs := range map[string]map[string]int{"pgbench simple": simple.Errors(), "pgbench prepared": prepared.Errors(), "sysbench": sb.Errors()} {
		if len(errs) > 0 {
			t.Errorf("%s saw errors on a clean run: %v", name, errs)
		}
	}
	t.Logf("load: %d pgbench simple, %d pgbench prepared, %d sysbench transactions",
		simple.Transactions(), prepared.Transactions(), sb.Transactions())

	if _, err := ledger.WaitDelivered(ctx, 2*time.Minute); err != nil {
		t.Fatalf("%v\nexporter:\n%s", err, s.Exporter.LogTail())
	}
	if tot, _, err := ledger.Check(ctx); err != nil {
		t.Fatal(err)
	} else if tot.Missing != 0 || tot.MyMissing != 0 || tot.DuplicateIDs != 0 {
		t.Errorf("ledger: %+v", tot)
	}

	// 1. The live stream, as an operator runs it with the broker's
	// configuration (the host CA from its data dir).
	out, err := tollgateRun(ctx, s, "audit", "verify")
	live := mustIntact(t, "live stream", out, err)
	if live.Frames == 0 || live.Ended == 0 || live.Sealed != live.Ended || live.Open != 0 || live.Events == 0 {
		t.Errorf("live stream: want frames, ended sessions all sealed and none open: %s", out)
	}

	// The host CA as an auditor gets it.
	hostCA := filepath.Join(s.Dir, "exported-host-ca.pem")
	if out, err := tollgateRun(ctx, s, "auth", "export", "--type=host", "--out", hostCA); err != nil {
		t.Fatalf("auth export: %v\n%s", err, out)
	}

	// 2. and 3. Every exporter's file, once it confirmed every event the
	// live check read. The exporters read AUDIT only (streams: [AUDIT]),
	// which holds the broker's copy of every STATE change too, so each
	// file holds exactly the stream's events, some maybe twice (at least
	// once: counted as copies, not events): the counts must equal the
	// live check's. Frames are not exported, so the file's summary has
	// none; its sessions are proven by their chains and seals.
	files := map[string]string{format.Native: s.ExportFile}
	for _, f := range otherFormats {
		files[f] = s.ExportFiles[f]
	}
	for _, f := range append([]string{format.Native}, otherFormats...) {
		name := "file"
		if f != format.Native {
			name = ExporterName(f)
		}
		if err := waitAcked(ctx, s, name, live.LastSeq); err != nil {
			t.Fatalf("exporter %s: %v\n%s", name, err, s.Exporter.LogTail())
		}
		out, err := tollgateRun(ctx, s, "audit", "verify", "--file", files[f], "--host-ca", hostCA, "--strict")
		got := mustIntact(t, f+" file", out, err)
		if got.Events != live.Events || got.Sessions != live.Sessions || got.Ended != live.Ended || got.Sealed != live.Sealed {
			t.Errorf("%s file: %d events, %d sessions (%d ended, %d sealed); the live stream: %d events, %d sessions (%d ended, %d sealed)",
				f, got.Events, got.Sessions, got.Ended, got.Sealed, live.Events, live.Sessions, live.Ended, live.Sealed)
		}
	}
	if last, err := auditLastSeq(ctx, s); err == nil && last != live.LastSeq {
		t.Errorf("the stream went on to sequence %d after the live check's %d on an idle system", last, live.LastSeq)
	}

	// A statement changed in a copy of the native file: the chain breaks
	// at the event that named the changed one's hash as its prev, and the
	// changed one is named as the likeliest culprit.
	tampered := filepath.Join(s.Dir, "tampered.jsonl")
	changed, next := tamper(t, s.ExportFile, tampered)
	out, err = tollgateRun(ctx, s, "audit", "verify", "--file", tampered, "--host-ca", hostCA, "--strict")
	t.Logf("tampered copy (db_query of %s in session %s changed):\n%s", changed.id, changed.sid, out)
	switch {
	case err == nil:
		t.Errorf("verify passed a copy with a changed db_query (event %s)", changed.id)
	case !strings.Contains(out, "event "+next+" session "+changed.sid+" "):
		t.Errorf("verify did not name the event after the changed one (%s, session %s):\n%s", next, changed.sid, out)
	case !strings.Contains(out, "event "+changed.id+")"):
		t.Errorf("verify did not name the changed event %s as the likely one:\n%s", changed.id, out)
	case strings.HasPrefix(lastLine(out), "intact"):
		t.Errorf("verify failed but called the copy intact:\n%s", out)
	}
	t.Logf("ran in %s", time.Since(began).Round(100*time.Millisecond))
}

// tollgateRun runs the built tollgate with the broker's configuration and
// returns what it printed.
func tollgateRun(ctx context.Context, s *Stack, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.Bin.Tollgate, append(args, "--config", s.Config)...)
	cmd.Env = childEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// verifySummary is what the summary line of an intact trail counts.
type verifySummary struct {
	Events, Sessions, Ended, Sealed, Open, Frames int
	LastSeq                                       uint64
}

var (
	summaryLine = regexp.MustCompile(`^intact: (\d+) events, (\d+) sessions \((\d+) ended, (\d+) sealed, (\d+) open[^)]*\)`)
	framesPart  = regexp.MustCompile(`, (\d+) frames from \d+ writer runs`)
	seqPart     = regexp.MustCompile(`, stream sequences \d+ to (\d+)`)
)

// mustIntact fails the test unless verify exited 0 with one summary line
// saying intact, and returns its counts.
func mustIntact(t *testing.T, what, out string, err error) verifySummary {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: audit verify: %v\n%s", what, err, out)
	}
	out = strings.TrimSpace(out)
	m := summaryLine.FindStringSubmatch(out)
	if m == nil || strings.Contains(out, "\n") {
		t.Fatalf("%s: audit verify exited 0 without one intact summary line:\n%s", what, out)
	}
	t.Logf("%s: %s", what, out)
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	v := verifySummary{Events: n(m[1]), Sessions: n(m[2]), Ended: n(m[3]), Sealed: n(m[4]), Open: n(m[5])}
	if f := framesPart.FindStringSubmatch(out); f != nil {
		v.Frames = n(f[1])
	}
	if q := seqPart.FindStringSubmatch(out); q != nil {
		v.LastSeq, _ = strconv.ParseUint(q[1], 10, 64)
	}
	if v.Events == 0 || v.Ended == 0 || v.Sealed != v.Ended {
		t.Errorf("%s: want events and ended sessions, every one sealed: %s", what, out)
	}
	return v
}

// waitAcked waits until the exporter called name has confirmed every
// event up to stream sequence seq.
func waitAcked(ctx context.Context, s *Stack, name string, seq uint64) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := s.JS.Stream(ctx, "AUDIT")
		if err == nil {
			c, err := st.Consumer(ctx, exporters.ConsumerName(name))
			if err == nil {
				ci, err := c.Info(ctx)
				if err == nil && ci.AckFloor.Stream >= seq {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("has not confirmed the events up to sequence %d within 2 minutes", seq)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// auditLastSeq is AUDIT's last sequence.
func auditLastSeq(ctx context.Context, s *Stack) (uint64, error) {
	st, err := s.JS.Stream(ctx, "AUDIT")
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

type exportedEvent struct {
	id, sid string
}

// tamper copies the native export file from to to with one character of
// one db.session.query's db_query changed (an event delivered once), and
// returns that event and the id of the event whose prev is its hash.
func tamper(t *testing.T, from, to string) (changed exportedEvent, next string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	type line struct {
		ID    string `json:"id"`
		Type  string `json:"type"`
		SID   string `json:"sid"`
		Prev  string `json:"prev"`
		Query string `json:"db_query"`
	}
	parsed := make([]line, len(lines))
	copies := map[string]int{}
	for i, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		if err := json.Unmarshal(l, &parsed[i]); err != nil {
			t.Fatalf("%s line %d: %v", from, i+1, err)
		}
		copies[parsed[i].ID]++
	}
	prevOf := map[string]string{} // hash → id of the event naming it as prev
	for i, p := range parsed {
		if p.Prev != "" {
			prevOf[p.SID+"\x00"+p.Prev] = parsed[i].ID
		}
	}
	key := []byte(`"db_query":"`)
	for i, p := range parsed {
		if p.Type != "db.session.query" || p.SID == "" || copies[p.ID] != 1 {
			continue
		}
		follower, ok := prevOf[p.SID+"\x00"+events.EventHash(bytes.TrimRight(lines[i], "\n"))]
		if !ok || copies[follower] != 1 {
			continue
		}
		at := bytes.Index(lines[i], key)
		if at < 0 {
			continue
		}
		// The first letter of the statement, its case swapped: still
		// valid JSON, still a statement, another hash.
		for j := at + len(key); j < len(lines[i]) && lines[i][j] != '"'; j++ {
			c := lines[i][j]
			if c == '\\' {
				break
			}
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
				lines[i] = bytes.Clone(lines[i])
				lines[i][j] = c ^ 0x20
				f, err := os.Create(to)
				if err != nil {
					t.Fatal(err)
				}
				w := bufio.NewWriter(f)
				for _, l := range lines {
					_, _ = w.Write(l)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				return exportedEvent{id: p.ID, sid: p.SID}, follower
			}
		}
	}
	t.Fatalf("%s holds no db.session.query to change", from)
	return exportedEvent{}, ""
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
