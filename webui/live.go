package webui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// liveEvent is one event of the live tail as the page's script shows it.
type liveEvent struct {
	Time      string `json:"time"`
	Type      string `json:"type"`
	User      string `json:"user"`
	Database  string `json:"db"`
	SID       string `json:"sid"`
	Code      string `json:"code"`
	Statement string `json:"statement"`
	JSON      string `json:"json"`
}

// liveCheck is how often a live tail checks that its viewer may still
// see it, as every page load does, and tells the browser it is there.
const liveCheck = 15 * time.Second

// auditLive follows AUDIT from a stream position on, sending the events
// the search selects as server-sent events whose id is the message's
// sequence, so a browser that reconnects (EventSource does on its own)
// resumes after the last message it got.
func (u *UI) auditLive(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	q := r.URL.Query()
	s, err := parseSearch(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	from, _ := strconv.ParseUint(q.Get("from"), 10, 64)
	if id, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		from = id
	}
	st, err := u.o.JS.Stream(r.Context(), events.AuditStream)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if from > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cons, err := st.OrderedConsumer(r.Context(), cc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	type msg struct {
		seq  uint64
		data []byte
	}
	msgs := make(chan msg, 64)
	cctx, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		select {
		case msgs <- msg{md.Sequence.Stream, m.Data()}:
		case <-r.Context().Done():
		}
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer cctx.Stop()
	// The server's write timeout is for answers, not for a stream that
	// lasts as long as the page is open.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	m := newMatcher(s)
	tick := time.NewTicker(liveCheck)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := u.authenticate(r); err != nil {
				fmt.Fprint(w, "event: ended\ndata: {}\n\n")
				_ = rc.Flush()
				return
			}
			if _, err := fmt.Fprint(w, ": still here\n\n"); err != nil {
				return
			}
		case mm := <-msgs:
			var out []liveEvent
			_ = events.SplitEvents(mm.data, func(ev []byte) error {
				if row, ok := m.match(ev); ok {
					out = append(out, liveEvent{Time: row.Env.Time.UTC().Format("2006-01-02 15:04:05.000Z"), Type: row.Env.Type,
						User: row.Env.User, Database: row.Env.DBService, SID: row.Env.SID, Code: row.Env.Code,
						Statement: row.Statement, JSON: indentJSON(ev)})
				}
				return nil
			})
			if len(out) == 0 {
				// The id still moves on, so a reconnect does not read
				// this message again.
				if _, err := fmt.Fprintf(w, "id: %d\n\n", mm.seq); err != nil {
					return
				}
			}
			for i, ev := range out {
				b, _ := json.Marshal(ev)
				if i == len(out)-1 {
					fmt.Fprintf(w, "id: %d\n", mm.seq)
				}
				if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
					return
				}
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
