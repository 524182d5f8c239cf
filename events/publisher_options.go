package events

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Mode says when Publish returns.
type Mode int

const (
	// ModeStrict returns only after JetStream acknowledged the event.
	ModeStrict Mode = iota
	// ModeAsync returns once the event is queued; a background goroutine
	// stores it, retrying until it is stored. A full queue blocks.
	ModeAsync
)

func (m Mode) String() string {
	switch m {
	case ModeStrict:
		return "strict"
	case ModeAsync:
		return "async"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "strict" or "async", as written in the configuration.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "strict", "":
		return ModeStrict, nil
	case "async":
		return ModeAsync, nil
	}
	return 0, fmt.Errorf("events: audit mode %q is not strict or async", s)
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher) error

// WithMode sets strict (default) or async publishing.
func WithMode(m Mode) PublisherOption {
	return func(p *Publisher) error {
		if m != ModeStrict && m != ModeAsync {
			return fmt.Errorf("mode %d is not ModeStrict or ModeAsync", int(m))
		}
		p.mode = m
		return nil
	}
}

// WithAckTimeout bounds how long a publish waits for JetStream's
// acknowledgement (DefaultAckTimeout).
func WithAckTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) error {
		if d <= 0 {
			return fmt.Errorf("ack timeout %s: must be positive", d)
		}
		p.ackTimeout = d
		return nil
	}
}

// WithQueueSize bounds the async queue (DefaultQueueSize events).
func WithQueueSize(n int) PublisherOption {
	return func(p *Publisher) error {
		if n < 1 {
			return fmt.Errorf("queue size %d: must be at least 1", n)
		}
		p.queueSize = n
		return nil
	}
}

// WithMaxMessageSize sets the largest message (headers and event) the
// publisher sends; larger events have their large fields cut. Without it,
// the smaller of the server's max payload and the AUDIT stream's max
// message size is used, else DefaultMaxMessageSize.
func WithMaxMessageSize(n int) PublisherOption {
	return func(p *Publisher) error {
		if n < minMessageSize {
			return fmt.Errorf("max message size %d: must be at least %d bytes", n, minMessageSize)
		}
		p.maxMsg = n
		return nil
	}
}

// WithLogger sets where the publisher reports retries and losses.
func WithLogger(l *slog.Logger) PublisherOption {
	return func(p *Publisher) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		p.log = l
		return nil
	}
}

// WithSource names the writer (default: the host name, dots made dashes):
// frames carry it as src and are stored under audit.<cluster>.frame.<src>.
func WithSource(name string) PublisherOption {
	return func(p *Publisher) error {
		if err := ValidToken(name); err != nil {
			return fmt.Errorf("source name: %w", err)
		}
		p.src = name
		return nil
	}
}

// WithSigner signs frames and seals session ends from the first event on
// (SetSigner changes it later).
func WithSigner(s *Signer) PublisherOption {
	return func(p *Publisher) error {
		p.signer.Store(s)
		return nil
	}
}
