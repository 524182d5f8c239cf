package webui_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/webui"
)

// TestSearchAudit checks each search field against events stored by a
// real publisher, and that paging by position returns every event once,
// newest first, by a scan and by the session path.
func TestSearchAudit(t *testing.T) {
	_, _, js := startNATS(t)
	pub, err := events.NewPublisher(js, config.DefaultCluster)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{js: js, pub: pub}
	publishSession(t, w, "S-a", "anna", "select 1", "update t set x = 1")
	time.Sleep(20 * time.Millisecond)
	cut := time.Now()
	time.Sleep(20 * time.Millisecond)
	// publishSession dates events a minute back; these are dated now.
	db := events.Database{Service: "pg2", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"}
	var evs []events.Event
	for i := range 5 {
		ev := &events.Query{Database: db, Query: fmt.Sprintf("select %d from Widgets", i)}
		ev.Header().User, ev.SID, ev.EI = "ben", "S-b", uint64(i)
		evs = append(evs, ev)
	}
	if err := pub.PublishBatch(ctxT(t), evs); err != nil {
		t.Fatal(err)
	}
	count := func(s webui.Search) []webui.Row {
		t.Helper()
		pg, err := webui.SearchAudit(ctxT(t), js, s, 100)
		if err != nil {
			t.Fatal(err)
		}
		return pg.Rows
	}
	for _, c := range []struct {
		name string
		s    webui.Search
		want int
	}{
		{"all", webui.Search{}, 6 + 5},
		{"user", webui.Search{User: "anna"}, 6},
		{"database", webui.Search{Database: "pg2"}, 5},
		{"session", webui.Search{Session: "S-a"}, 6},
		{"session and type", webui.Search{Session: "S-a", TypePrefix: "db.session.query"}, 2},
		{"type prefix", webui.Search{TypePrefix: "db.session.end"}, 1},
		{"text ignores case", webui.Search{Text: "widgets"}, 5},
		{"text", webui.Search{Text: "UPDATE T SET"}, 1},
		{"until", webui.Search{Until: cut}, 6},
		{"since", webui.Search{Since: cut}, 5},
		{"nothing", webui.Search{User: "nobody"}, 0},
	} {
		if got := count(c.s); len(got) != c.want {
			t.Errorf("%s: %d rows, want %d", c.name, len(got), c.want)
		}
	}
	all := count(webui.Search{})
	if !slices.IsSortedFunc(all, func(a, b webui.Row) int {
		if a.Pos.Seq != b.Pos.Seq {
			return int(b.Pos.Seq) - int(a.Pos.Seq)
		}
		return b.Pos.Index - a.Pos.Index
	}) {
		t.Fatalf("not newest first: %+v", all)
	}
	for _, s := range []webui.Search{{}, {Session: "S-b"}} {
		var got []webui.Position
		for {
			pg, err := webui.SearchAudit(ctxT(t), js, s, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range pg.Rows {
				got = append(got, r.Pos)
			}
			if pg.Next.Seq == 0 || len(pg.Rows) == 0 {
				break
			}
			s.Before = pg.Next
		}
		want := 11
		if s.Session != "" {
			want = 5
		}
		if len(got) != want || len(slices.Compact(slices.Clone(got))) != want {
			t.Fatalf("paged %+v: %v", s, got)
		}
	}
}
