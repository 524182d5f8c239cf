package events

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// encode encodes the stamped ev after dst, cutting large fields (kept in
// the object store) when it would not fit in a frame of its own.
func (p *Publisher) encode(ctx context.Context, ev Event, dst []byte) ([]byte, error) {
	h := ev.Header()
	data, err := appendEvent(dst, ev)
	if err != nil {
		return dst, fmt.Errorf("events: encode %s %s: %w", h.Type, h.ID, err)
	}
	if limit := p.eventLimit(); len(data) > limit {
		if data, err = p.cutLarge(ctx, h.ID, data, limit); err != nil {
			return dst, err
		}
	}
	return data, nil
}

// eventLimit is the largest encoded event a frame of one event holds: the
// message limit less the frame's header and trailer (with the signer's
// certificate), the subject and the Nats-Msg-Id header.
func (p *Publisher) eventLimit() int {
	limit := p.maxMsg - frameReserve - len(p.subject) - 2*ulidLen - len(jetstream.MsgIDHeader) - 16
	if s := p.signer.Load(); s != nil {
		limit -= len(s.certB64) + 200 // trailer and, on a session's end, signer and seal
		limit -= len(s.certB64)
	}
	return limit
}

// ulidLen is the length of an event or frame id.
const ulidLen = 26

func (p *Publisher) cutLarge(ctx context.Context, id string, data []byte, limit int) ([]byte, error) {
	event, full, err := truncateEvent(data, limit)
	if err != nil {
		return data, fmt.Errorf("events: event %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	defer cancel()
	obs, err := p.largeStore(ctx)
	if err == nil {
		_, err = obs.PutBytes(ctx, id, full)
	}
	if err != nil {
		return data, fmt.Errorf("%w: storing large fields of event %s in %s: %v", ErrAuditUnavailable, id, LargeFieldsBucket, err)
	}
	p.truncated.Add(1)
	return append(data[:0], event...), nil
}

func (p *Publisher) largeStore(ctx context.Context) (jetstream.ObjectStore, error) {
	p.largeMu.Lock()
	defer p.largeMu.Unlock()
	if p.large != nil {
		return p.large, nil
	}
	obs, err := p.js.ObjectStore(ctx, LargeFieldsBucket)
	if err != nil {
		return nil, err
	}
	p.large = obs
	return obs, nil
}

// appendJSON encodes ev after dst with a pooled encoder. HTML escaping is
// off: statements are full of < > & and SIEMs show the JSON as is.
func appendJSON(dst []byte, ev Event) ([]byte, error) {
	e := encPool.Get().(*jsonEncoder)
	e.w.b = dst
	err := e.enc.Encode(ev)
	out := e.w.b
	e.w.b = nil
	encPool.Put(e)
	if err != nil {
		return dst, err
	}
	// Encode ends the value with a newline that the message does not need.
	return out[:len(out)-1], nil
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

type jsonEncoder struct {
	w   sliceWriter
	enc *json.Encoder
}

var encPool = sync.Pool{New: func() any {
	e := &jsonEncoder{}
	e.enc = json.NewEncoder(&e.w)
	e.enc.SetEscapeHTML(false)
	return e
}}
