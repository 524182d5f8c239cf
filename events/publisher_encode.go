package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// encode stamps ev and encodes it into a pooled message, cutting large
// fields (kept in the object store) when it would not fit.
func (p *Publisher) encode(ctx context.Context, ev Event) (*outMsg, error) {
	if v := reflect.ValueOf(ev); !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, errors.New("events: publish: nil event")
	}
	if err := Stamp(ev, p.cluster); err != nil {
		return nil, err
	}
	h := ev.Header()
	m := p.msgs.Get().(*outMsg)
	data, err := appendEvent(m.msg.Data[:0], ev)
	if err != nil {
		p.msgs.Put(m)
		return nil, fmt.Errorf("events: encode %s %s: %w", h.Type, h.ID, err)
	}
	m.id = h.ID
	m.hdrID[0] = h.ID
	m.msg.Subject = AuditSubject(ev)
	m.msg.Data = data
	if limit := p.maxMsg - msgIDHeaderLen - len(h.ID) - len(m.msg.Subject); len(data) > limit {
		// The subject is counted too: it is small, and leaving it out
		// could put a message a few bytes over the server's limit.
		if err := p.cutLarge(ctx, m, limit); err != nil {
			p.recycle(m)
			return nil, err
		}
	}
	return m, nil
}

func (p *Publisher) cutLarge(ctx context.Context, m *outMsg, limit int) error {
	event, full, err := truncateEvent(m.msg.Data, limit)
	if err != nil {
		return fmt.Errorf("events: event %s: %w", m.id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	defer cancel()
	obs, err := p.largeStore(ctx)
	if err == nil {
		_, err = obs.PutBytes(ctx, m.id, full)
	}
	if err != nil {
		return fmt.Errorf("%w: storing large fields of event %s in %s: %v", ErrAuditUnavailable, m.id, LargeFieldsBucket, err)
	}
	m.msg.Data = event
	p.truncated.Add(1)
	return nil
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
