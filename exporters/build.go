package exporters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// Deps is what exporters built from the configuration share.
type Deps struct {
	JS        jetstream.JetStream
	Publisher *events.Publisher
	Log       *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Replicas of the DEADLETTER stream and the stats bucket.
	Replicas int
	// ProductVersion is Tollgate's version, for OCSF metadata.
	ProductVersion string
}

// Build makes the exporter described by c (the i-th of the file, for
// messages): its sink from the registered types, its format and filter,
// and its delivery settings, all decoded strictly.
func Build(ctx context.Context, i int, c config.Exporter, d Deps) (*Exporter, error) {
	where := fmt.Sprintf("exporters[%d]", i)
	if c.Name != "" {
		where = fmt.Sprintf("exporters[%d] (%s)", i, c.Name)
	}
	f, ok := factory(c.Type)
	if !ok {
		return nil, fmt.Errorf("%s.type: %q is not a sink type (want one of %s)", where, c.Type, strings.Join(Types(), ", "))
	}
	fm, err := format.New(c.Format, format.Options{Requests: NewRequestResolver(d.JS), ProductVersion: d.ProductVersion})
	if err != nil {
		return nil, fmt.Errorf("%s.format: %w", where, err)
	}
	dn, sn, err := splitSettings(&c.Settings)
	if err != nil {
		return nil, fmt.Errorf("%s.settings: %w", where, err)
	}
	var del Delivery
	if err := decodeStrict(dn, &del, where+".settings"); err != nil {
		return nil, err
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	decoded := false
	p := Params{Name: c.Name, Log: log.With("exporter", c.Name, "sink", c.Type), settings: sn, where: where + ".settings", decoded: &decoded}
	sink, err := f(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if !decoded && sn != nil && len(sn.Content) > 0 {
		_ = sink.Close()
		return nil, fmt.Errorf("line %d: unknown key %q: sink %s takes no settings of its own", sn.Content[0].Line, where+".settings."+sn.Content[0].Value, c.Type)
	}
	x, err := New(Options{
		Name: c.Name, SinkType: c.Type, Sink: sink, Format: fm,
		Filter:   Filter{Types: c.Filter.Types, Users: c.Filter.Users, Databases: c.Filter.Databases},
		Delivery: del, JS: d.JS, Publisher: d.Publisher, Log: log, Metrics: d.Metrics, Replicas: d.Replicas,
	})
	if err != nil {
		_ = sink.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return x, nil
}

// Check validates what Build would decode of c without building its sink:
// the name, the sink type is registered, the format known, the filter's
// types, the delivery settings and the sink's own keys and their types
// valid. What a sink checks only as it is built (a required URL, a file
// it opens) is not: building a sink may dial it, and `tollgate start
// --check` must run where the sinks are not reachable.
func Check(i int, c config.Exporter) error {
	where := fmt.Sprintf("exporters[%d]", i)
	if c.Name != "" {
		where = fmt.Sprintf("exporters[%d] (%s)", i, c.Name)
	}
	f, ok := factory(c.Type)
	if !ok {
		return fmt.Errorf("%s.type: %q is not a sink type (want one of %s)", where, c.Type, strings.Join(Types(), ", "))
	}
	if _, err := format.New(c.Format, format.Options{}); err != nil {
		return fmt.Errorf("%s.format: %w", where, err)
	}
	dn, sn, err := splitSettings(&c.Settings)
	if err != nil {
		return fmt.Errorf("%s.settings: %w", where, err)
	}
	// The sink's own keys and their types, as its factory decodes them;
	// it stops at Decode, before building anything.
	decoded := false
	p := Params{Name: c.Name, Log: slog.New(slog.DiscardHandler), settings: sn, where: where + ".settings", decoded: &decoded, checkOnly: true}
	sink, err := f(context.Background(), p)
	if sink != nil {
		_ = sink.Close()
	}
	if err != nil && !errors.Is(err, errSettingsChecked) {
		return fmt.Errorf("%s: %w", where, err)
	}
	if !decoded && sn != nil && len(sn.Content) > 0 {
		return fmt.Errorf("line %d: unknown key %q: sink %s takes no settings of its own", sn.Content[0].Line, where+".settings."+sn.Content[0].Value, c.Type)
	}
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("%s.name: %q: want 1 to 64 letters, digits, '-' or '_'", where, c.Name)
	}
	if err := (Filter{Types: c.Filter.Types}).validate(); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	var del Delivery
	if err := decodeStrict(dn, &del, where+".settings"); err != nil {
		return err
	}
	del.fillDefaults()
	if err := del.validate(); err != nil {
		return fmt.Errorf("%s.settings: %w", where, err)
	}
	return nil
}

// RunAll builds every exporter of the configuration and runs them until
// ctx ends. A configuration error stops it before any exporter starts.
func RunAll(ctx context.Context, cs []config.Exporter, d Deps) error {
	xs := make([]*Exporter, 0, len(cs))
	for i, c := range cs {
		x, err := Build(ctx, i, c, d)
		if err != nil {
			for _, y := range xs {
				_ = y.o.Sink.Close()
			}
			return err
		}
		xs = append(xs, x)
	}
	// An exporter that cannot start (its consumers, after retries) stops
	// the others: the process fails rather than run half its exporters.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(xs))
	for i, x := range xs {
		wg.Go(func() {
			if errs[i] = x.Run(ctx); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RequestResolver finds access requests in the STATE stream (their first
// event, access_request.create), for OCSF approvals. It keeps what it found.
type RequestResolver struct {
	js jetstream.JetStream
	mu sync.Mutex
	m  map[string]format.AccessRequest
}

// NewRequestResolver reads from js.
func NewRequestResolver(js jetstream.JetStream) *RequestResolver {
	return &RequestResolver{js: js, m: map[string]format.AccessRequest{}}
}

// maxResolved bounds the cache; it starts over when full.
const maxResolved = 4096

// AccessRequest implements format.AccessRequests.
func (r *RequestResolver) AccessRequest(ctx context.Context, id string) (format.AccessRequest, bool, error) {
	if r == nil || r.js == nil || events.ValidToken(id) != nil {
		return format.AccessRequest{}, false, nil
	}
	r.mu.Lock()
	if a, ok := r.m[id]; ok {
		r.mu.Unlock()
		return a, true, nil
	}
	r.mu.Unlock()
	st, err := r.js.Stream(ctx, events.StateStream)
	if err != nil {
		return format.AccessRequest{}, false, err
	}
	m, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events.StateSubject("access_request", id)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return format.AccessRequest{}, false, nil
	}
	if err != nil {
		return format.AccessRequest{}, false, err
	}
	var c events.AccessRequestCreate
	if err := json.Unmarshal(m.Data, &c); err != nil || c.Type != "access_request.create" {
		return format.AccessRequest{}, false, nil
	}
	a := format.AccessRequest{Requester: c.Requester, Roles: c.RequestRoles}
	r.mu.Lock()
	if len(r.m) >= maxResolved {
		clear(r.m)
	}
	r.m[id] = a
	r.mu.Unlock()
	return a, true, nil
}
