package events

import (
	"context"
	"fmt"
	"time"
)

// sendAsync sends an async event once a slot in flight is free; false when
// the publisher stopped first.
func (p *Publisher) sendAsync(m *outMsg) (sent, stopped bool) {
	select {
	case p.slots <- struct{}{}:
	case <-p.stop:
		return false, true
	}
	p.published.Add(1)
	if err := p.pipe.send(m); err != nil {
		<-p.slots
		p.warn("audit event not sent, retrying", "id", m.id, "error", err)
		return false, false
	}
	return true, false
}

// done marks one accepted async event as stored.
func (p *Publisher) done() {
	if p.pending.Add(-1) != 0 {
		return
	}
	p.idleMu.Lock()
	if p.pending.Load() == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.idleMu.Unlock()
}

// enqueue hands an encoded event to the async goroutine, blocking while the
// queue is full: events are never dropped.
func (p *Publisher) enqueue(ctx context.Context, m *outMsg) error {
	// Counting the event before looking at closing pairs with Close, which
	// closes closing before it waits for pending to reach zero: either Close
	// waits for this event or this event sees closing.
	p.pending.Add(1)
	if p.isClosing() {
		p.recycle(m)
		p.done()
		return ErrPublisherClosed
	}
	select {
	case p.queue <- m:
		return nil
	default:
	}
	start := time.Now()
	defer func() { p.blocked.Add(int64(time.Since(start))) }()
	select {
	case p.queue <- m:
		return nil
	case <-ctx.Done():
		p.recycle(m)
		p.done()
		return fmt.Errorf("events: audit queue full (%d events) until the context ended: %w", p.queueSize, ctx.Err())
	case <-p.closing:
		p.recycle(m)
		p.done()
		return ErrPublisherClosed
	}
}

func (p *Publisher) addRetry(m *outMsg) {
	p.retryMu.Lock()
	p.retries = append(p.retries, m)
	p.retryMu.Unlock()
	select {
	case p.retryWake <- struct{}{}:
	default:
	}
}

func (p *Publisher) takeRetries(buf []*outMsg) []*outMsg {
	p.retryMu.Lock()
	buf = append(buf[:0], p.retries...)
	clear(p.retries)
	p.retries = p.retries[:0]
	p.retryMu.Unlock()
	return buf
}

// Retry backoff of the async goroutine.
const (
	retryMin = 5 * time.Millisecond
	retryMax = time.Second
)

// drain is the async goroutine: it sends queued events pipelined and
// resends failed ones with backoff. While any event waits for a resend it
// takes nothing new from the queue, so a store that is down fills the queue
// and blocks producers instead of growing memory.
func (p *Publisher) drain() {
	defer close(p.drained)
	var (
		backoff time.Duration
		retries []*outMsg
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if p.fault.Load() != nil {
			// Suspended: hold everything until the stream is sound again.
			select {
			case <-p.faultWake:
			case <-p.stop:
				p.abandon(p.takeRetries(retries))
				return
			}
			continue
		}
		retries = p.takeRetries(retries)
		if len(retries) > 0 {
			if p.progress.Swap(false) {
				backoff = 0
			}
			backoff = min(max(backoff*2, retryMin), retryMax)
			timer.Reset(backoff)
			select {
			case <-timer.C:
			case <-p.stop:
				p.abandon(retries)
				return
			}
			for i, m := range retries {
				if p.fault.Load() != nil {
					for _, r := range retries[i:] {
						p.addRetry(r)
					}
					break
				}
				p.retried.Add(1)
				sent, stopped := p.sendAsync(m)
				if stopped {
					p.abandon(retries[i:])
					return
				}
				if !sent {
					for _, r := range retries[i:] {
						p.addRetry(r)
					}
					break
				}
			}
			clear(retries)
			continue
		}
		select {
		case m := <-p.queue:
			if p.fault.Load() != nil {
				p.addRetry(m)
				continue
			}
			sent, stopped := p.sendAsync(m)
			if stopped {
				p.abandon([]*outMsg{m})
				return
			}
			if !sent {
				p.addRetry(m)
			}
		case <-p.retryWake:
		case <-p.faultWake:
		case <-p.stop:
			p.abandon(p.takeRetries(retries))
			return
		}
	}
}

// abandon logs the ids of events that Close gave up on, queued or waiting
// for a resend, so they can be found in the log when nowhere else.
func (p *Publisher) abandon(ms []*outMsg) {
	for {
		select {
		case m := <-p.queue:
			ms = append(ms, m)
			continue
		default:
		}
		break
	}
	for _, m := range ms {
		p.log.Error("audit event not stored before close", "id", m.id, "subject", m.msg.Subject)
	}
}
