package exporters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-db/tollgate/events"
)

// StatsBucket is the key-value bucket that keeps each exporter's counters,
// summed over its replicas and restarts, one key per exporter.
const StatsBucket = "EXPORTERS"

// ConsumerPrefix starts the durable consumer name of every exporter:
// exporter-<name>, in each stream it reads.
const ConsumerPrefix = "exporter-"

// Stats counts what an exporter did.
type Stats struct {
	// Delivered counts events the sink confirmed, each event of a frame
	// on its own (duplicates after a retry or a crash included).
	Delivered uint64 `json:"delivered"`
	// Bytes counts the bytes of those events in the exporter's format.
	Bytes uint64 `json:"bytes"`
	// Retries counts failed delivery attempts that were retried.
	Retries uint64 `json:"retries"`
	// DeadLetters counts events sent to the DEADLETTER stream.
	DeadLetters uint64 `json:"dead_letters"`
	// Filtered counts events the filter left out.
	Filtered uint64 `json:"filtered"`
	// LastDelivery is when the sink last confirmed a batch.
	LastDelivery time.Time `json:"last_delivery,omitzero"`
	// LastError is the last delivery failure, and when it happened.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	// Updated is when these counters were last written.
	Updated time.Time `json:"updated,omitzero"`
}

func (s *Stats) add(d Stats) {
	s.Delivered += d.Delivered
	s.Bytes += d.Bytes
	s.Retries += d.Retries
	s.DeadLetters += d.DeadLetters
	s.Filtered += d.Filtered
	if d.LastDelivery.After(s.LastDelivery) {
		s.LastDelivery = d.LastDelivery
	}
	if d.LastErrorTime.After(s.LastErrorTime) {
		s.LastError, s.LastErrorTime = d.LastError, d.LastErrorTime
	}
}

// counters are one process's counts, flushed into the bucket as deltas.
type counters struct {
	delivered, bytes, retries, deadLetters, filtered atomic.Uint64

	mu            sync.Mutex
	lastDelivery  time.Time
	lastError     string
	lastErrorTime time.Time
	flushed       Stats // what the bucket already has of this process
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Delivered: c.delivered.Load(), Bytes: c.bytes.Load(), Retries: c.retries.Load(),
		DeadLetters: c.deadLetters.Load(), Filtered: c.filtered.Load(),
		LastDelivery: c.lastDelivery, LastError: c.lastError, LastErrorTime: c.lastErrorTime,
	}
}

func (c *counters) setError(err error) {
	c.mu.Lock()
	c.lastError, c.lastErrorTime = err.Error(), time.Now().UTC()
	c.mu.Unlock()
}

func (c *counters) setDelivered() {
	c.mu.Lock()
	c.lastDelivery = time.Now().UTC()
	c.mu.Unlock()
}

// delta is what this process counted since the last flush.
func (c *counters) delta() Stats {
	now := c.snapshot()
	c.mu.Lock()
	prev := c.flushed
	c.mu.Unlock()
	d := Stats{
		Delivered: now.Delivered - prev.Delivered, Bytes: now.Bytes - prev.Bytes, Retries: now.Retries - prev.Retries,
		DeadLetters: now.DeadLetters - prev.DeadLetters, Filtered: now.Filtered - prev.Filtered,
	}
	if now.LastDelivery.After(prev.LastDelivery) {
		d.LastDelivery = now.LastDelivery
	}
	if now.LastErrorTime.After(prev.LastErrorTime) {
		d.LastError, d.LastErrorTime = now.LastError, now.LastErrorTime
	}
	return d
}

func (c *counters) markFlushed(s Stats) {
	c.mu.Lock()
	c.flushed.add(s)
	c.mu.Unlock()
}

// statsBucket opens (creating it if needed) the bucket of counters.
func statsBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, StatsBucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	if replicas < 1 {
		replicas = 1
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      StatsBucket,
		Description: "Tollgate exporters: delivered, retries and dead letters per exporter",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
}

// flushStats adds this process's counts to the exporter's key, retrying
// when another replica wrote it meanwhile.
func flushStats(ctx context.Context, kv jetstream.KeyValue, name string, c *counters) error {
	d := c.delta()
	if d == (Stats{}) {
		return nil
	}
	for attempt := 0; attempt < 20; attempt++ {
		var cur Stats
		var rev uint64
		e, err := kv.Get(ctx, name)
		switch {
		case err == nil:
			if jerr := json.Unmarshal(e.Value(), &cur); jerr != nil {
				cur = Stats{}
			}
			rev = e.Revision()
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			return err
		}
		cur.add(d)
		cur.Updated = time.Now().UTC()
		b, _ := json.Marshal(cur)
		if rev == 0 {
			_, err = kv.Create(ctx, name, b)
		} else {
			_, err = kv.Update(ctx, name, b, rev)
		}
		if err == nil {
			c.markFlushed(d)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !strings.Contains(err.Error(), "wrong last sequence") {
			return err
		}
	}
	return fmt.Errorf("exporters: stats of %s: too many concurrent updates", name)
}

// StreamStatus is one exporter's consumer in one stream.
type StreamStatus struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Pending is how many stored messages the exporter has not been given
	// yet; AckPending how many it holds without a confirmation. These
	// count messages, as JetStream does: a frame is one message holding
	// many events.
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	// Redelivered counts messages given out again (after a crash or an
	// expired ack wait) and not yet confirmed.
	Redelivered int `json:"redelivered"`
	// Waiting is how many fetches are outstanding: the replicas at work.
	Waiting int `json:"waiting"`
}

// Status is what `tollgate exporters ls` shows of one exporter.
type Status struct {
	Name    string         `json:"name"`
	Streams []StreamStatus `json:"streams"`
	// Lag is the messages stored and not yet confirmed, over every
	// stream (a frame counts once, whatever the events it holds).
	Lag   uint64 `json:"lag"`
	Stats Stats  `json:"stats"`
}

// List reports every exporter that has a consumer or counters, plus the
// names given (exporters configured but not started yet).
func List(ctx context.Context, js jetstream.JetStream, names ...string) ([]Status, error) {
	byName := map[string]*Status{}
	get := func(n string) *Status {
		if s, ok := byName[n]; ok {
			return s
		}
		s := &Status{Name: n}
		byName[n] = s
		return s
	}
	for _, n := range names {
		get(n)
	}
	for _, stream := range []string{events.AuditStream, events.StateStream} {
		st, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("exporters: stream %s: %w", stream, err)
		}
		lister := st.ListConsumers(ctx)
		for ci := range lister.Info() {
			if !strings.HasPrefix(ci.Name, ConsumerPrefix) {
				continue
			}
			s := get(strings.TrimPrefix(ci.Name, ConsumerPrefix))
			s.Streams = append(s.Streams, StreamStatus{
				Stream: stream, Consumer: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
				Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting,
			})
			s.Lag += ci.NumPending + uint64(ci.NumAckPending)
		}
		if err := lister.Err(); err != nil {
			return nil, fmt.Errorf("exporters: consumers of %s: %w", stream, err)
		}
	}
	if kv, err := js.KeyValue(ctx, StatsBucket); err == nil {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return nil, err
		}
		for k := range keys.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue
			}
			s := get(k)
			_ = json.Unmarshal(e.Value(), &s.Stats)
		}
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	out := make([]Status, 0, len(byName))
	for _, s := range byName {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Metrics are the exporters' Prometheus metrics, labelled by exporter.
type Metrics struct {
	delivered   *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	filtered    *prometheus.CounterVec
	lag         *prometheus.GaugeVec
	batch       *prometheus.HistogramVec
}

// NewMetrics registers the exporters' metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "delivered_total", Help: "Events the sink confirmed."}, []string{"exporter"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "delivered_bytes_total", Help: "Bytes of the events the sink confirmed, in the exporter's format."}, []string{"exporter"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "retries_total", Help: "Failed delivery attempts that were retried."}, []string{"exporter"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "dead_letters_total", Help: "Events the sink rejected for good, stored in the DEADLETTER stream."}, []string{"exporter"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "filtered_total", Help: "Events the exporter's filter left out."}, []string{"exporter"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "lag_events", Help: "Messages stored and not yet confirmed by the sink (a frame of many events counts once)."}, []string{"exporter", "stream"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "tollgate", Subsystem: "exporter",
			Name: "delivery_seconds", Help: "Time the sink took to confirm one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"exporter"}),
	}
	for _, c := range []prometheus.Collector{m.delivered, m.bytes, m.retries, m.deadLetters, m.filtered, m.lag, m.batch} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("exporters: metrics: %w", err)
		}
	}
	return m, nil
}
