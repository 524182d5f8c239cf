// Package splunk is the exporters' Splunk HTTP Event Collector sink:
// batches of JSON events to /services/collector/event, with optional
// indexer acknowledgement.
package splunk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/internal/tlsfiles"
)

// Type is the sink's type in the configuration.
const Type = "splunk_hec"

func init() {
	exporters.Register(Type, func(_ context.Context, p exporters.Params) (exporters.Sink, error) {
		var c Config
		if err := p.Decode(&c); err != nil {
			return nil, err
		}
		return New(c)
	})
}

// Paths of the collector's endpoints.
const (
	EventPath = "/services/collector/event"
	AckPath   = "/services/collector/ack"
)

// Defaults of Config.
const (
	DefaultMaxRequestBytes = 1 << 20
	DefaultTimeout         = 30 * time.Second
	DefaultAckTimeout      = 2 * time.Minute
	DefaultAckPoll         = 250 * time.Millisecond
)

// Config is the sink's settings.
type Config struct {
	// URL of the collector, e.g. https://splunk.example.com:8088.
	URL string `yaml:"url"`
	// Token is the HEC token; TokenFile reads it from a file instead, so
	// it stays out of the configuration.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// Index, Source, Sourcetype and Host are set on every event; empty
	// ones are left to the token's defaults (Host: this machine's name).
	Index      string `yaml:"index"`
	Source     string `yaml:"source"`
	Sourcetype string `yaml:"sourcetype"`
	Host       string `yaml:"host"`
	// Ack waits for indexer acknowledgement (the token must have it on):
	// events are confirmed only once Splunk says they are indexed.
	Ack bool `yaml:"ack"`
	// Channel is the request channel (a GUID) for acknowledgements;
	// random when empty.
	Channel string `yaml:"channel"`
	// AckTimeout is how long to wait for indexing before sending again.
	AckTimeout config.Duration `yaml:"ack_timeout"`
	// AckPollInterval is the pause between acknowledgement queries.
	AckPollInterval config.Duration `yaml:"ack_poll_interval"`
	// MaxRequestBytes splits a batch into requests of at most this size
	// (an event larger than that goes alone).
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// Timeout bounds one HTTP request.
	Timeout config.Duration `yaml:"timeout"`
	TLS     tlsfiles.Config `yaml:"tls"`
}

// Sink posts events to a collector.
type Sink struct {
	c       Config
	token   string
	auth    string
	events  string
	acks    string
	client  *http.Client
	head    []byte // "host", "source", … common to every event
	channel string
	bufs    sync.Pool // *buffers, one per delivery under way
}

// buffers are a delivery's request bodies, reused.
type buffers struct{ body, spare []byte }

// DefaultConcurrency is how many batches are posted at once by default:
// while one waits for the collector, the next is on its way.
const DefaultConcurrency = 4

// Concurrency makes the sink a ConcurrentSink: Deliver keeps no state
// between calls but the HTTP client.
func (s *Sink) Concurrency() int { return DefaultConcurrency }

// New checks the settings and prepares the HTTP client.
func New(c Config) (*Sink, error) {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("splunk_hec: settings.url %q: want http(s)://host:port", c.URL)
	}
	token := c.Token
	if c.TokenFile != "" {
		if token != "" {
			return nil, errors.New("splunk_hec: set settings.token or settings.token_file, not both")
		}
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("splunk_hec: settings.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, errors.New("splunk_hec: settings.token (or token_file) is required")
	}
	if strings.ContainsAny(token, "\r\n ") {
		return nil, errors.New("splunk_hec: the token holds whitespace")
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = config.Duration(DefaultAckTimeout)
	}
	if c.AckPollInterval == 0 {
		c.AckPollInterval = config.Duration(DefaultAckPoll)
	}
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("splunk_hec: settings.%w", err)
	}
	if tc != nil && u.Scheme != "https" {
		return nil, errors.New("splunk_hec: settings.tls is set but the url is not https")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = 4
	base := strings.TrimRight(u.String(), "/")
	if u.Path != "" && u.Path != "/" {
		base = strings.TrimSuffix(base, EventPath)
	}
	s := &Sink{
		bufs: sync.Pool{New: func() any { return new(buffers) }},
		c:    c, token: token, auth: "Splunk " + token,
		events: base + EventPath, acks: base + AckPath,
		client: &http.Client{Transport: tr, Timeout: c.Timeout.Std()},
	}
	if c.Ack {
		s.channel = c.Channel
		if s.channel == "" {
			s.channel = newGUID()
		}
		s.acks += "?channel=" + url.QueryEscape(s.channel)
	}
	var h []byte
	for _, kv := range [][2]string{{"host", c.Host}, {"source", c.Source}, {"sourcetype", c.Sourcetype}, {"index", c.Index}} {
		if kv[1] == "" {
			continue
		}
		h = append(h, ',', '"')
		h = append(h, kv[0]...)
		h = append(h, '"', ':')
		h = appendJSONString(h, kv[1])
	}
	s.head = h
	return s, nil
}

// Channel is the request channel used for acknowledgements ("" without).
func (s *Sink) Channel() string { return s.channel }

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// AppendEvent appends one HEC event object for r, with a newline.
func (s *Sink) AppendEvent(dst []byte, r *exporters.Record) []byte {
	dst = append(dst, `{"time":`...)
	us := r.Time.UnixMicro()
	dst = strconv.AppendInt(dst, us/1e6, 10)
	dst = append(dst, '.')
	frac := us % 1e6
	if frac < 0 {
		frac += 1e6
	}
	f := strconv.AppendInt(nil, frac+1e6, 10)
	dst = append(dst, f[1:]...)
	dst = append(dst, s.head...)
	dst = append(dst, `,"fields":{"event_id":`...)
	dst = appendJSONString(dst, r.ID)
	dst = append(dst, `,"event_type":`...)
	dst = appendJSONString(dst, r.Type)
	if r.Code != "" {
		dst = append(dst, `,"event_code":`...)
		dst = appendJSONString(dst, r.Code)
	}
	if r.Cluster != "" {
		dst = append(dst, `,"cluster":`...)
		dst = appendJSONString(dst, r.Cluster)
	}
	dst = append(dst, `},"event":`...)
	dst = append(dst, r.Data...)
	return append(dst, '}', '\n')
}

// outcome of one record within a Deliver.
type outcome struct {
	err   error
	ackID int64 // -1: confirmed without acknowledgement
}

// Deliver posts the batch in requests of at most MaxRequestBytes and, with
// Ack, waits until the indexers acknowledged every request.
func (s *Sink) Deliver(ctx context.Context, recs []exporters.Record) error {
	out := make([]outcome, len(recs))
	bufs := s.bufs.Get().(*buffers)
	defer s.bufs.Put(bufs)
	body := bufs.body[:0]
	group := make([]int, 0, len(recs))
	for i := range recs {
		n := len(body)
		body = s.AppendEvent(body, &recs[i])
		if n > 0 && len(body) > s.c.MaxRequestBytes {
			// The event does not fit: send what came before it, and
			// start the next request with it.
			ev := append(bufs.spare[:0], body[n:]...)
			s.post(ctx, recs, group, body[:n], out)
			body = append(body[:0], ev...)
			bufs.spare = ev[:0]
			group = group[:0]
		}
		group = append(group, i)
	}
	if len(group) > 0 {
		s.post(ctx, recs, group, body, out)
	}
	bufs.body = body[:0]
	if cap(body) > 4*s.c.MaxRequestBytes {
		bufs.body = nil
	}
	if s.c.Ack {
		s.waitAcks(ctx, out)
	}
	re := exporters.RecordErrors{}
	for i, o := range out {
		if o.err != nil {
			re[i] = o.err
		}
	}
	if len(re) == 0 {
		return nil
	}
	if len(re) == len(recs) {
		// Every record failed the same way: say so plainly, so the
		// exporter retries (or dead-letters) the batch as a whole.
		first := re[0]
		same := true
		for _, e := range re {
			if exporters.IsPermanent(e) != exporters.IsPermanent(first) {
				same = false
				break
			}
		}
		if same && !exporters.IsPermanent(first) {
			return first
		}
	}
	return re
}

// hecReply is the collector's answer to an event request.
type hecReply struct {
	Text               string `json:"text"`
	Code               int    `json:"code"`
	AckID              *int64 `json:"ackId"`
	InvalidEventNumber *int   `json:"invalid-event-number"`
}

// post sends the events of group (indices into recs) as one request and
// records each one's outcome. A request the collector refuses as invalid
// is narrowed down to the event at fault, which alone is rejected for good.
func (s *Sink) post(ctx context.Context, recs []exporters.Record, group []int, body []byte, out []outcome) {
	status, reply, err := s.send(ctx, body)
	switch {
	case err != nil:
		for _, i := range group {
			out[i] = outcome{err: err}
		}
		return
	case status/100 == 2:
		ack := int64(-1)
		if s.c.Ack {
			if reply.AckID == nil {
				err := fmt.Errorf("splunk_hec: indexer acknowledgement is on but the collector returned no ackId (is it enabled on the token?)")
				for _, i := range group {
					out[i] = outcome{err: err}
				}
				return
			}
			ack = *reply.AckID
		}
		for _, i := range group {
			out[i] = outcome{ackID: ack}
		}
		return
	case (status == http.StatusBadRequest && isDataError(reply.Code)) || status == http.StatusRequestEntityTooLarge:
		refusal := fmt.Errorf("splunk_hec: HTTP %d: %s (code %d)", status, reply.Text, reply.Code)
		if len(group) == 1 {
			out[group[0]] = outcome{err: exporters.Permanent(refusal)}
			return
		}
		bad := -1
		if n := reply.InvalidEventNumber; n != nil && *n >= 0 && *n < len(group) && status == http.StatusBadRequest {
			bad = *n
		}
		var parts [][]int
		if bad >= 0 {
			out[group[bad]] = outcome{err: exporters.Permanent(refusal)}
			rest := append(append([]int(nil), group[:bad]...), group[bad+1:]...)
			parts = [][]int{rest}
		} else {
			mid := len(group) / 2
			parts = [][]int{group[:mid], group[mid:]}
		}
		for _, p := range parts {
			if len(p) == 0 {
				continue
			}
			var b []byte
			for _, i := range p {
				b = s.AppendEvent(b, &recs[i])
			}
			s.post(ctx, recs, p, b, out)
		}
		return
	default:
		// 503 (busy), 429, other 5xx, and token or channel problems
		// (401, 403, 400 codes 10/11): retried, never dropped.
		err := fmt.Errorf("splunk_hec: HTTP %d: %s (code %d)", status, reply.Text, reply.Code)
		for _, i := range group {
			out[i] = outcome{err: err}
		}
	}
}

// isDataError says whether a 400's code blames the events themselves
// (no data, invalid format, event field missing or blank, bad index…)
// rather than the token or the channel.
func isDataError(code int) bool {
	switch code {
	case 5, 6, 7, 12, 13, 27:
		return true
	}
	return false
}

func (s *Sink) send(ctx context.Context, body []byte) (int, hecReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.events, bytes.NewReader(body))
	if err != nil {
		return 0, hecReply{}, err
	}
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Content-Type", "application/json")
	if s.channel != "" {
		req.Header.Set("X-Splunk-Request-Channel", s.channel)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, hecReply{}, fmt.Errorf("splunk_hec: %w", redact(err, s.token))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var r hecReply
	if jerr := json.Unmarshal(b, &r); jerr != nil && resp.StatusCode/100 == 2 && s.c.Ack {
		return resp.StatusCode, r, fmt.Errorf("splunk_hec: unreadable reply to an event request: %q", truncate(b))
	}
	if r.Text == "" {
		r.Text = strings.TrimSpace(truncate(b))
	}
	return resp.StatusCode, r, nil
}

// waitAcks polls the acknowledgement endpoint until every request of the
// batch is indexed or AckTimeout passes; unacknowledged events fail (and
// are sent again).
func (s *Sink) waitAcks(ctx context.Context, out []outcome) {
	pending := map[int64]bool{}
	for _, o := range out {
		if o.err == nil && o.ackID >= 0 {
			pending[o.ackID] = true
		}
	}
	deadline := time.Now().Add(s.c.AckTimeout.Std())
	var lastErr error
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		ids := make([]int64, 0, len(pending))
		for id := range pending {
			ids = append(ids, id)
		}
		acked, err := s.queryAcks(ctx, ids)
		if err != nil {
			lastErr = err
		}
		for id, ok := range acked {
			if ok {
				delete(pending, id)
			}
		}
		if len(pending) == 0 {
			break
		}
		t := time.NewTimer(s.c.AckPollInterval.Std())
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if len(pending) == 0 {
		return
	}
	err := fmt.Errorf("splunk_hec: %d requests not acknowledged by the indexers within %s", len(pending), s.c.AckTimeout.Std())
	if lastErr != nil {
		err = fmt.Errorf("%w (last poll: %v)", err, lastErr)
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	for i, o := range out {
		if o.err == nil && pending[o.ackID] {
			out[i].err = err
		}
	}
}

func (s *Sink) queryAcks(ctx context.Context, ids []int64) (map[int64]bool, error) {
	body, _ := json.Marshal(map[string][]int64{"acks": ids})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.acks, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Splunk-Request-Channel", s.channel)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("splunk_hec: ack query: %w", redact(err, s.token))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("splunk_hec: ack query: HTTP %d: %s", resp.StatusCode, truncate(b))
	}
	var r struct {
		Acks map[string]bool `json:"acks"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("splunk_hec: ack query: unreadable reply %q", truncate(b))
	}
	out := make(map[int64]bool, len(r.Acks))
	for k, v := range r.Acks {
		if id, err := strconv.ParseInt(k, 10, 64); err == nil {
			out[id] = v
		}
	}
	return out, nil
}

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// redact keeps the token out of an error (a URL error quotes the URL, and
// a misconfigured one could hold it).
func redact(err error, token string) error {
	if token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), token, "[token]"))
}

func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
