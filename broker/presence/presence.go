// Package presence keeps, in the JetStream key-value bucket PRESENCE,
// which proxies are up and which agent serves which database through
// which proxy. Every proxy writes what it sees (its own record and one
// route per database of each agent tunnel it holds) and reads what the
// others wrote, so any proxy can route to any agent; agents read the
// proxies to keep a tunnel to each; `db ls` reads the routes to say
// whether a database is online.
//
// Each entry is a lease: it carries its expiry and its writer renews it
// every third of the lease. A proxy that closes a tunnel deletes its
// routes at once; a proxy that dies stops renewing and its entries are
// taken as gone once they expire, whatever the bucket still holds.
// Readers decide by the expiry in the value rather than by the bucket's
// own TTL because a key the TTL removes sends watchers nothing.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the key-value bucket of presence.
const Bucket = "PRESENCE"

// DefaultLease is how long an entry stays valid without renewal: a proxy
// that died without a word has its routes taken for offline after at most
// this long.
const DefaultLease = 15 * time.Second

// Proxy is a running proxy.
type Proxy struct {
	ID string `json:"id"`
	// Addr is where agents and other proxies reach this proxy (host:port).
	Addr string `json:"addr"`
	// Renewed is when the proxy last renewed its lease (by its clock, as
	// Expires is): how long ago says whether it keeps up.
	Renewed time.Time `json:"renewed,omitzero"`
	Expires time.Time `json:"expires"`
}

// Route says that an agent serves a database through a proxy's tunnel.
type Route struct {
	Database  string    `json:"database"`
	HostID    string    `json:"host_id"`
	Proxy     string    `json:"proxy"`
	ProxyAddr string    `json:"proxy_addr"`
	Expires   time.Time `json:"expires"`
}

// Ensure binds PRESENCE, creating it when it does not exist; the broker's
// identity calls it at start, before agents that only read it.
func Ensure(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      Bucket,
			Description: "Proxies and the agent tunnels they hold, as leases (broker/presence)",
			History:     1,
			// Memory storage: presence is rebuilt within a lease after a
			// restart, and a stale route on disk would only mislead.
			Storage:  jetstream.MemoryStorage,
			Replicas: max(replicas, 1),
			// Entries whose writer is long gone are dropped; readers
			// already ignore them once their lease ran out.
			TTL: time.Hour,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("presence: key-value bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Open binds PRESENCE, which a broker made.
func Open(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("presence: key-value bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

func proxyKey(id string) string { return "proxy." + token(id) }

func routeKey(db, host, proxy string) string {
	return "route." + token(db) + "." + token(host) + "." + token(proxy)
}

// token makes s one key token: bytes a key may not hold, and the dot that
// separates tokens, become =XX.
func token(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	if b.Len() == 0 {
		return "=00"
	}
	return b.String()
}

// Announcer is a proxy's writer: its own record and its routes, renewed
// until Run returns.
type Announcer struct {
	kv    jetstream.KeyValue
	self  Proxy
	lease time.Duration
	log   *slog.Logger
	now   func() time.Time

	mu     sync.Mutex
	routes map[string]Route // by key
	done   bool
}

// NewAnnouncer writes for the proxy id reached at addr; lease is
// DefaultLease when zero.
func NewAnnouncer(kv jetstream.KeyValue, id, addr string, lease time.Duration, log *slog.Logger) *Announcer {
	if lease <= 0 {
		lease = DefaultLease
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Announcer{kv: kv, self: Proxy{ID: id, Addr: addr}, lease: lease, log: log, now: time.Now, routes: map[string]Route{}}
}

// ID is the proxy's id.
func (a *Announcer) ID() string { return a.self.ID }

// Addr is the address the proxy announces.
func (a *Announcer) Addr() string { return a.self.Addr }

// Add records that hostID serves db through this proxy, at once.
func (a *Announcer) Add(ctx context.Context, db, hostID string) {
	r := Route{Database: db, HostID: hostID, Proxy: a.self.ID, ProxyAddr: a.self.Addr}
	k := routeKey(db, hostID, a.self.ID)
	a.mu.Lock()
	if a.done {
		a.mu.Unlock()
		return
	}
	a.routes[k] = r
	a.mu.Unlock()
	// Bounded: a proxy cut from NATS still routes its own tunnels, and
	// the next renewal writes the route.
	ctx, cancel := context.WithTimeout(ctx, a.lease/3)
	defer cancel()
	a.put(ctx, k, r)
}

// Remove deletes the route of hostID to db through this proxy, at once.
func (a *Announcer) Remove(ctx context.Context, db, hostID string) {
	k := routeKey(db, hostID, a.self.ID)
	a.mu.Lock()
	delete(a.routes, k)
	a.mu.Unlock()
	if err := a.kv.Delete(ctx, k); err != nil && ctx.Err() == nil {
		a.log.Warn("presence: route not deleted; it lapses with its lease", "database", db, "host_id", hostID, "err", err)
	}
}

func (a *Announcer) put(ctx context.Context, key string, v any) {
	switch x := v.(type) {
	case Route:
		x.Expires = a.now().Add(a.lease)
		v = x
	case Proxy:
		x.Renewed = a.now()
		x.Expires = x.Renewed.Add(a.lease)
		v = x
	}
	b, _ := json.Marshal(v)
	if _, err := a.kv.Put(ctx, key, b); err != nil && ctx.Err() == nil {
		a.log.Warn("presence: not renewed", "key", key, "err", err)
	}
}

// Run announces the proxy and renews every entry each third of the lease
// until ctx ends; then it deletes them, so a proxy stopped cleanly is
// gone at once rather than after its lease.
func (a *Announcer) Run(ctx context.Context) {
	t := time.NewTicker(a.lease / 3)
	defer t.Stop()
	for {
		a.renew(ctx)
		select {
		case <-ctx.Done():
			a.withdraw()
			return
		case <-t.C:
		}
	}
}

func (a *Announcer) renew(ctx context.Context) {
	a.put(ctx, proxyKey(a.self.ID), a.self)
	a.mu.Lock()
	routes := make(map[string]Route, len(a.routes))
	for k, r := range a.routes {
		routes[k] = r
	}
	a.mu.Unlock()
	for k, r := range routes {
		a.put(ctx, k, r)
	}
}

func (a *Announcer) withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.mu.Lock()
	a.done = true
	keys := []string{proxyKey(a.self.ID)}
	for k := range a.routes {
		keys = append(keys, k)
	}
	a.routes = map[string]Route{}
	a.mu.Unlock()
	for _, k := range keys {
		_ = a.kv.Delete(ctx, k)
	}
}

// View follows PRESENCE and answers from memory.
type View struct {
	now func() time.Time

	mu      sync.RWMutex
	proxies map[string]Proxy // by key
	routes  map[string]Route // by key
	changed chan struct{}
}

// Watch follows kv until ctx ends; it returns once the current entries
// are read.
func Watch(ctx context.Context, kv jetstream.KeyValue) (*View, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence: watch %s: %w", Bucket, err)
	}
	v := &View{now: time.Now, proxies: map[string]Proxy{}, routes: map[string]Route{}, changed: make(chan struct{})}
	ready := make(chan struct{})
	go v.follow(ctx, w, ready)
	select {
	case <-ready:
		return v, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (v *View) follow(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	defer func() { _ = w.Stop() }()
	readyOnce := sync.OnceFunc(func() { close(ready) })
	defer readyOnce()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-w.Updates():
		case <-ctx.Done():
			return
		}
		if !ok {
			return
		}
		if e == nil {
			readyOnce()
			continue
		}
		v.mu.Lock()
		k := e.Key()
		put := e.Operation() == jetstream.KeyValuePut
		switch {
		case strings.HasPrefix(k, "proxy."):
			var p Proxy
			if put && json.Unmarshal(e.Value(), &p) == nil {
				v.proxies[k] = p
			} else {
				delete(v.proxies, k)
			}
		case strings.HasPrefix(k, "route."):
			var r Route
			if put && json.Unmarshal(e.Value(), &r) == nil {
				v.routes[k] = r
			} else {
				delete(v.routes, k)
			}
		}
		close(v.changed)
		v.changed = make(chan struct{})
		v.mu.Unlock()
	}
}

// Changed is closed at the next change of any entry.
func (v *View) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

// Proxies are the proxies whose lease runs, by id.
func (v *View) Proxies() []Proxy {
	now := v.now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Proxy
	for _, p := range v.proxies {
		if p.Expires.After(now) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Proxy) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Routes are the live routes to database db, the latest lease first.
func (v *View) Routes(db string) []Route {
	now := v.now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Route
	for _, r := range v.routes {
		if r.Database == db && r.Expires.After(now) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return b.Expires.Compare(a.Expires) })
	return out
}

// Tunnels are the live routes through proxy id (the agent tunnels it
// holds), by database then host.
func (v *View) Tunnels(id string) []Route {
	now := v.now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Route
	for _, r := range v.routes {
		if r.Proxy == id && r.Expires.After(now) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := strings.Compare(a.Database, b.Database); c != 0 {
			return c
		}
		return strings.Compare(a.HostID, b.HostID)
	})
	return out
}

// Online says whether some agent serves db through some proxy.
func (v *View) Online(db string) bool { return len(v.Routes(db)) > 0 }

// ProxyIDs are the proxies that route db, sorted.
func (v *View) ProxyIDs(db string) []string {
	var ids []string
	for _, r := range v.Routes(db) {
		if !slices.Contains(ids, r.Proxy) {
			ids = append(ids, r.Proxy)
		}
	}
	slices.Sort(ids)
	return ids
}
