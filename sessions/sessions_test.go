package sessions

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// session builds the stored events of one session: ev's ei is its index,
// its time t0 + i*10ms.
func session(t testing.TB, sid string, evs ...events.Event) [][]byte {
	t.Helper()
	var out [][]byte
	for i, ev := range evs {
		h := ev.Header()
		h.User, h.Roles, h.Time = "alice", []string{"dba"}, t0.Add(time.Duration(i)*10*time.Millisecond)
		se := ev.(events.SessionEvent).SessionHeader()
		se.SID, se.EI = sid, uint64(i)
		if err := events.Stamp(ev, "c1"); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

var db = events.Database{Service: "pg1", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"}

func sample(t testing.TB) [][]byte {
	return session(t, "S1",
		&events.SessionStart{Database: db, Status: events.Status{Success: true}, Rule: "role dba: allow", ClientAddr: "127.0.0.1:5000"},
		&events.Query{Database: db, Query: "begin; select 1"},
		&events.Result{Database: db, Status: events.Status{Success: true}, CommandTag: "BEGIN"},
		&events.Result{Database: db, Status: events.Status{Success: true}, CommandTag: "SELECT 1", Rows: 1},
		&events.PostgresParse{Database: db, StatementName: "s1", Query: "select * from t where id = $1", ParameterOIDs: []uint32{23}},
		&events.PostgresBind{Database: db, StatementName: "s1", Parameters: []string{"7"}},
		&events.PostgresExecute{Database: db, StatementName: "s1", Query: "select * from t where id = $1", Parameters: []string{"7"}},
		&events.Result{Database: db, Status: events.Status{Success: false, Error: "relation \"t\" does not exist"}, ErrorCode: "42P01", ErrorMessage: "relation \"t\" does not exist"},
		&events.SessionTerminate{Database: db, Reason: events.EndLocked, Message: "session ended: user alice is locked", LockID: "L1"},
		&events.SessionEnd{Database: db, Reason: events.EndLocked, Statements: 2, Rows: 1, Errors: 1, DurationNs: int64(90 * time.Millisecond)},
	)
}

func TestTimeline(t *testing.T) {
	evs := sample(t)
	// Stored order is not ei order when results overtake; the timeline
	// sorts by ei.
	shuffled := slices.Clone(evs)
	shuffled[2], shuffled[7] = shuffled[7], shuffled[2]
	tl, err := FromEvents(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if len(tl.Missing) != 0 || len(tl.Entries) != len(evs) {
		t.Fatalf("missing %v, %d entries", tl.Missing, len(tl.Entries))
	}
	st := tl.Statements()
	if len(st) != 2 || st[0].Extended || len(st[0].Results) != 2 || !st[1].Extended ||
		!slices.Equal(st[1].Params, []string{"7"}) || !slices.Equal(st[1].ParamOIDs, []uint32{23}) || st[1].Results[0].ErrorCode != "42P01" {
		t.Fatalf("statements: %+v", st)
	}
	if tl.Session.EndReason != events.EndLocked || tl.Session.Statements != 2 || tl.Session.DBName != "shop" {
		t.Fatalf("session: %+v", tl.Session)
	}
	var b strings.Builder
	if err := tl.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"session S1: user alice on pg1 as db_user app db_name shop",
		"+    0.010s  [1] STATEMENT begin; select 1",
		"[3]   -> SELECT 1 (1 rows)",
		`[6] STATEMENT select * from t where id = $1  params ["7"]`,
		"-> ERROR 42P01: relation \"t\" does not exist",
		"[8] TERMINATE locked: session ended: user alice is locked",
		"[9] END       locked; 2 statements, 1 rows, 1 errors",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("timeline lacks %q:\n%s", want, b.String())
		}
	}
	// A gap in ei is reported.
	gappy, _ := FromEvents(append(slices.Clone(evs[:3]), evs[5:]...))
	if !slices.Equal(gappy.Missing, []uint64{3, 4}) {
		t.Fatalf("missing %v, want [3 4]", gappy.Missing)
	}
	var b2 strings.Builder
	_ = gappy.WriteText(&b2)
	if !strings.Contains(b2.String(), "2 events missing from the audit trail: ei 3, 4") {
		t.Fatalf("gap not shown:\n%s", b2.String())
	}
}

func TestProjection(t *testing.T) {
	p := NewProjection()
	apply := func(evs [][]byte) {
		for _, e := range evs {
			if err := p.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(sample(t))
	live := session(t, "S2",
		&events.SessionStart{Database: db, Status: events.Status{Success: true}},
		&events.Query{Database: db, Query: "select 1"},
		&events.Result{Database: db, Status: events.Status{Success: true}, CommandTag: "SELECT 3", Rows: 3},
		&events.Result{Database: db, Status: events.Status{Success: false}, ErrorCode: "22012"},
	)
	apply(live)
	other := events.Database{Service: "my1", Protocol: "mysql", URI: "x"}
	apply(session(t, "S3", &events.SessionStart{Database: other, Status: events.Status{Success: false, Error: "access denied"}}))
	if got := p.Sessions(Filter{}); len(got) != 3 {
		t.Fatalf("%d sessions", len(got))
	}
	l := p.Sessions(Filter{LiveOnly: true})
	if len(l) != 1 || l[0].SID != "S2" || l[0].Statements != 2 || l[0].Rows != 3 || l[0].Errors != 1 || !l[0].Live() {
		t.Fatalf("live: %+v", l)
	}
	d := p.Sessions(Filter{Database: "my1"})
	if len(d) != 1 || !d[0].Denied || d[0].Error != "access denied" || d[0].Live() {
		t.Fatalf("denied: %+v", d)
	}
	if n := len(p.Sessions(Filter{User: "bob"})); n != 0 {
		t.Fatalf("%d sessions of bob", n)
	}
}

func TestCompare(t *testing.T) {
	ok := func(tag string, rows uint64) Result { return Result{Success: true, Tag: tag, Rows: rows} }
	fail := func(code string) Result { return Result{Success: false, ErrorCode: code, Error: "boom"} }
	for _, c := range []struct {
		rec, got []Result
		want     string
	}{
		{[]Result{ok("SELECT 1", 1)}, []Result{ok("SELECT 1", 1)}, ""},
		{[]Result{fail("42P01")}, []Result{fail("42P01")}, ""},
		{[]Result{ok("SELECT 1", 1)}, []Result{ok("SELECT 2", 2)}, `command tag recorded "SELECT 1", now "SELECT 2"`},
		{[]Result{ok("SHOW", 1)}, []Result{ok("SHOW", 2)}, "rows recorded 1, now 2"},
		{[]Result{ok("UPDATE 1", 1)}, []Result{fail("40001")}, "recorded UPDATE 1 (1 rows), now ERROR 40001: boom"},
		{[]Result{fail("23505")}, []Result{fail("40001")}, "error code recorded 23505, now 40001"},
		{[]Result{ok("BEGIN", 0), ok("SELECT 1", 1)}, []Result{ok("BEGIN", 0)}, "2 results recorded, 1 now"},
		{[]Result{ok("BEGIN", 0), ok("SELECT 1", 1)}, []Result{ok("BEGIN", 0), ok("SELECT 0", 0)}, `result 2: command tag recorded "SELECT 1", now "SELECT 0"`},
	} {
		if got := compare(c.rec, c.got); got != c.want {
			t.Errorf("compare(%v, %v) = %q, want %q", c.rec, c.got, got, c.want)
		}
	}
}

func TestProgress(t *testing.T) {
	var b strings.Builder
	p := newProgress(&b, 4)
	for i := 1; i <= 4; i++ {
		p.step(i, 1)
	}
	p.done()
	if !strings.HasSuffix(b.String(), "[##############################] 4/4 statements, 1 differences\n") {
		t.Fatalf("progress: %q", b.String())
	}
	if redactDSN("postgres://u:secret@h:5433/db") != "u@h:5433/db" {
		t.Fatalf("redacted: %s", redactDSN("postgres://u:secret@h:5433/db"))
	}
}

// BenchmarkProjection measures building the session list from stored
// events (what sessions ls does per event it reads).
func BenchmarkProjection(b *testing.B) {
	evs := sample(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := NewProjection()
		for _, e := range evs {
			_ = p.Apply(e)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
}

// FuzzFromEvents: whatever the stored events hold, building a timeline,
// its statements and its text never panics.
func FuzzFromEvents(f *testing.F) {
	for _, e := range sample(f) {
		f.Add(e, []byte(`{"type":"db.session.result","sid":"S1","ei":99,"db_rows":3}`))
	}
	f.Add([]byte(`{"sid":"x","ei":18446744073709551615}`), []byte(`{"sid":"x","ei":0,"type":"db.session.postgres.copy"}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		tl, err := FromEvents([][]byte{a, b})
		if err != nil {
			return
		}
		_ = tl.Statements()
		var sb strings.Builder
		_ = tl.WriteText(&sb)
	})
}
