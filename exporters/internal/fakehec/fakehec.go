// Package fakehec is a strict stand-in for Splunk's HTTP Event Collector,
// for tests: it checks the token, the batch format (concatenated JSON
// event objects with HEC's keys only) and the indexer acknowledgement
// protocol (request channel, ackId, /services/collector/ack), and it can
// be told to be busy (503), to refuse chosen events (400) and to lose
// requests without acknowledging them.
package fakehec

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configures New.
type Options struct {
	Token string
	// Ack turns on indexer acknowledgement, as on a token with it
	// enabled: requests must name a channel and get an ackId.
	Ack bool
	// AckAfterPolls is how many acknowledgement queries see a request as
	// not yet indexed before it is (0: indexed at once).
	AckAfterPolls int
	// LoseEvery, when > 0, loses every n-th accepted request: it gets an
	// ackId that never turns true, and its events are never indexed.
	LoseEvery int
	// Reject says whether an event (the "event" value) is refused as
	// invalid; the request fails with 400, code 6 and its number.
	Reject func(event []byte) bool
	// MaxBody refuses larger requests with 413 (0: no limit).
	MaxBody int
	// TLS serves HTTPS with this configuration.
	TLS *tls.Config
	// CountOnly, for benchmarks, checks the token and counts events (one
	// per line, as the sink writes them) without decoding them, so the
	// collector's own cost does not hide the sink's.
	CountOnly bool
}

// Server is a running fake collector.
type Server struct {
	URL string
	o   Options
	srv *httptest.Server

	mu         sync.Mutex
	counted    int
	indexed    map[string][][]byte // event id -> every copy indexed
	order      []string
	busyUntil  time.Time
	requests   int
	busy       int
	rejected   int
	violations []string
	channels   map[string]*channel
}

type channel struct {
	next    int64
	pending map[int64]*ackState
}

type ackState struct {
	events [][]byte
	ids    []string
	polls  int
	lost   bool
	done   bool
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// New starts the server; it stops when the test ends.
func New(t testing.TB, o Options) *Server {
	t.Helper()
	s := &Server{o: o, indexed: map[string][][]byte{}, channels: map[string]*channel{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/services/collector/event", s.event)
	mux.HandleFunc("/services/collector/ack", s.ack)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.violation("request to unknown path %s", r.URL.Path)
		reply(w, 404, `{"text":"The requested URL was not found on this server.","code":404}`)
	})
	s.srv = httptest.NewUnstartedServer(mux)
	if o.TLS != nil {
		s.srv.TLS = o.TLS
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (s *Server) violation(f string, a ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(f, a...))
	s.mu.Unlock()
}

// Busy makes the server answer 503 for d.
func (s *Server) Busy(d time.Duration) {
	s.mu.Lock()
	s.busyUntil = time.Now().Add(d)
	s.mu.Unlock()
}

// auth checks the Authorization header; false after replying.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	switch {
	case h == "":
		reply(w, 401, `{"text":"Token is required","code":2}`)
		return false
	case h != "Splunk "+s.o.Token:
		reply(w, 403, `{"text":"Invalid token","code":4}`)
		return false
	}
	return true
}

func (s *Server) isBusy(w http.ResponseWriter) bool {
	s.mu.Lock()
	busy := time.Now().Before(s.busyUntil)
	if busy {
		s.busy++
	}
	s.mu.Unlock()
	if busy {
		reply(w, 503, `{"text":"Server is busy","code":9}`)
	}
	return busy
}

var hecKeys = map[string]bool{"time": true, "host": true, "source": true, "sourcetype": true, "index": true, "event": true, "fields": true}

func (s *Server) event(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.violation("event request with method %s", r.Method)
		reply(w, 405, `{"text":"Method not allowed","code":404}`)
		return
	}
	if !s.auth(w, r) || s.isBusy(w) {
		return
	}
	ch := r.Header.Get("X-Splunk-Request-Channel")
	if s.o.Ack {
		if ch == "" {
			s.violation("event request without X-Splunk-Request-Channel while acknowledgement is on")
			reply(w, 400, `{"text":"Data channel is missing","code":10}`)
			return
		}
		if !guidRE.MatchString(ch) {
			s.violation("request channel %q is not a GUID", ch)
			reply(w, 400, `{"text":"Invalid data channel","code":11}`)
			return
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		reply(w, 400, `{"text":"Invalid data format","code":6}`)
		return
	}
	if s.o.CountOnly {
		s.mu.Lock()
		s.requests++
		s.counted += bytes.Count(body, []byte("\n"))
		s.mu.Unlock()
		reply(w, 200, `{"text":"Success","code":0}`)
		return
	}
	if s.o.MaxBody > 0 && len(body) > s.o.MaxBody {
		s.mu.Lock()
		s.rejected++
		s.mu.Unlock()
		reply(w, 413, `{"text":"Content length too large","code":27}`)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var evs [][]byte
	var ids []string
	for n := 0; ; n++ {
		var obj map[string]json.RawMessage
		err := dec.Decode(&obj)
		if err == io.EOF {
			if n == 0 {
				s.violation("empty event request")
				reply(w, 400, `{"text":"No data","code":5}`)
				return
			}
			break
		}
		if err != nil {
			s.violation("event %d of a request is not a JSON object: %v", n, err)
			reply(w, 400, fmt.Sprintf(`{"text":"Invalid data format","code":6,"invalid-event-number":%d}`, n))
			return
		}
		if msg := checkEvent(obj); msg != "" {
			s.violation("event %d: %s", n, msg)
			code := 6
			if strings.HasPrefix(msg, "no event") {
				code = 12
			}
			reply(w, 400, fmt.Sprintf(`{"text":%q,"code":%d,"invalid-event-number":%d}`, msg, code, n))
			return
		}
		if s.o.Reject != nil && s.o.Reject(obj["event"]) {
			s.mu.Lock()
			s.rejected++
			s.mu.Unlock()
			reply(w, 400, fmt.Sprintf(`{"text":"Invalid data format","code":6,"invalid-event-number":%d}`, n))
			return
		}
		evs = append(evs, obj["event"])
		ids = append(ids, eventID(obj))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if !s.o.Ack {
		s.index(ids, evs)
		reply(w, 200, `{"text":"Success","code":0}`)
		return
	}
	c := s.channels[ch]
	if c == nil {
		c = &channel{pending: map[int64]*ackState{}}
		s.channels[ch] = c
	}
	id := c.next
	c.next++
	c.pending[id] = &ackState{events: evs, ids: ids, lost: s.o.LoseEvery > 0 && s.requests%s.o.LoseEvery == 0}
	reply(w, 200, fmt.Sprintf(`{"text":"Success","code":0,"ackId":%d}`, id))
}

// checkEvent says what is wrong with one HEC event object ("" if nothing).
func checkEvent(obj map[string]json.RawMessage) string {
	for k := range obj {
		if !hecKeys[k] {
			return fmt.Sprintf("unknown key %q", k)
		}
	}
	ev, ok := obj["event"]
	if !ok {
		return "no event field"
	}
	if s := string(ev); s == `""` || s == "null" || s == "{}" {
		return "event field is blank"
	}
	if t, ok := obj["time"]; ok {
		if _, err := strconv.ParseFloat(string(t), 64); err != nil {
			return fmt.Sprintf("time %s is not epoch seconds", t)
		}
	}
	for _, k := range []string{"host", "source", "sourcetype", "index"} {
		if v, ok := obj[k]; ok {
			var s string
			if json.Unmarshal(v, &s) != nil || s == "" {
				return fmt.Sprintf("%s is not a non-empty string", k)
			}
		}
	}
	if f, ok := obj["fields"]; ok {
		var fields map[string]json.RawMessage
		if json.Unmarshal(f, &fields) != nil {
			return "fields is not an object"
		}
		for k, v := range fields {
			var s string
			var l []string
			if json.Unmarshal(v, &s) != nil && json.Unmarshal(v, &l) != nil {
				return fmt.Sprintf("field %q is not a string or a list of strings", k)
			}
		}
	}
	return ""
}

// eventID is the Tollgate event id of an HEC event: the indexed field,
// else the id inside the event (native or OCSF form).
func eventID(obj map[string]json.RawMessage) string {
	var f struct {
		ID string `json:"event_id"`
	}
	_ = json.Unmarshal(obj["fields"], &f)
	if f.ID != "" {
		return f.ID
	}
	var e struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(obj["event"], &e)
	return e.ID
}

func (s *Server) index(ids []string, evs [][]byte) {
	for i, id := range ids {
		if _, seen := s.indexed[id]; !seen {
			s.order = append(s.order, id)
		}
		s.indexed[id] = append(s.indexed[id], evs[i])
	}
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.violation("ack request with method %s", r.Method)
		reply(w, 405, `{"text":"Method not allowed","code":404}`)
		return
	}
	if !s.auth(w, r) || s.isBusy(w) {
		return
	}
	if !s.o.Ack {
		s.violation("ack query to a token without acknowledgement")
		reply(w, 400, `{"text":"ACK is disabled","code":14}`)
		return
	}
	ch := r.URL.Query().Get("channel")
	if h := r.Header.Get("X-Splunk-Request-Channel"); ch == "" {
		ch = h
	}
	if ch == "" {
		s.violation("ack query without a channel")
		reply(w, 400, `{"text":"Data channel is missing","code":10}`)
		return
	}
	var q struct {
		Acks []int64 `json:"acks"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &q); err != nil || q.Acks == nil {
		s.violation("ack query body %q is not {\"acks\":[ids]}", b)
		reply(w, 400, `{"text":"Invalid data format","code":6}`)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[ch]
	out := map[string]bool{}
	for _, id := range q.Acks {
		var st *ackState
		if c != nil {
			st = c.pending[id]
		}
		if st == nil {
			if c == nil || id >= c.next {
				s.violation("ack query for id %d never issued on channel %s", id, ch)
			}
			out[strconv.FormatInt(id, 10)] = false
			continue
		}
		if !st.done && !st.lost {
			st.polls++
			if st.polls > s.o.AckAfterPolls {
				st.done = true
				s.index(st.ids, st.events)
			}
		}
		out[strconv.FormatInt(id, 10)] = st.done
	}
	b, _ = json.Marshal(map[string]any{"acks": out})
	reply(w, 200, string(b))
}

// Indexed returns every indexed copy of each event, by event id.
func (s *Server) Indexed() map[string][][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][][]byte, len(s.indexed))
	for k, v := range s.indexed {
		out[k] = v
	}
	return out
}

// Count is the number of distinct events indexed (with CountOnly, the
// number of events received).
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.o.CountOnly {
		return s.counted
	}
	return len(s.indexed)
}

// Counters returns accepted, busy (503) and rejected requests.
func (s *Server) Counters() (accepted, busy, rejected int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.busy, s.rejected
}

// Violations are the protocol errors clients made.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}
