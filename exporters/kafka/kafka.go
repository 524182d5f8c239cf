// Package kafka is the exporters' Kafka sink (github.com/segmentio/kafka-go):
// every event a record keyed by its id, written with acks=all.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/internal/tlsfiles"
)

// Type is the sink's type in the configuration.
const Type = "kafka"

func init() {
	exporters.Register(Type, func(_ context.Context, p exporters.Params) (exporters.Sink, error) {
		var c Config
		if err := p.Decode(&c); err != nil {
			return nil, err
		}
		return New(c)
	})
}

// Defaults of Config.
const (
	// DefaultMaxMessageBytes stays under the brokers' default
	// message.max.bytes (1048588) with room for the batch framing.
	DefaultMaxMessageBytes = 1000000
	DefaultTimeout         = 30 * time.Second
)

// Config is the sink's settings.
type Config struct {
	// Brokers to bootstrap from, host:port.
	Brokers []string `yaml:"brokers"`
	// Topic every event is written to.
	Topic string `yaml:"topic"`
	// Compression: none (default), gzip, snappy, lz4 or zstd.
	Compression string `yaml:"compression"`
	// MaxMessageBytes: a larger event is rejected for good (dead-lettered)
	// without being sent; batches are split to stay under it.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// Timeout bounds one produce request.
	Timeout config.Duration `yaml:"timeout"`
	TLS     tlsfiles.Config `yaml:"tls"`
	SASL    SASL            `yaml:"sasl"`
}

// SASL authenticates to the brokers.
type SASL struct {
	// Mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password, or PasswordFile to keep it out of the configuration.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

func (s SASL) mechanism() (sasl.Mechanism, error) {
	if s.Mechanism == "" {
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" {
			return nil, errors.New("sasl.mechanism is required with a username or password")
		}
		return nil, nil
	}
	pw := s.Password
	if s.PasswordFile != "" {
		if pw != "" {
			return nil, errors.New("set sasl.password or sasl.password_file, not both")
		}
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("sasl.password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	if s.Username == "" || pw == "" {
		return nil, errors.New("sasl.username and a password are required")
	}
	switch strings.ToUpper(s.Mechanism) {
	case "PLAIN":
		return plain.Mechanism{Username: s.Username, Password: pw}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, s.Username, pw)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, s.Username, pw)
	}
	return nil, fmt.Errorf("sasl.mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}

// Sink writes events to a topic.
type Sink struct {
	c Config
	w *kafkago.Writer
}

// DefaultConcurrency is how many batches are written at once by default:
// kafka-go's writer takes messages from several callers into the same
// produce requests.
const DefaultConcurrency = 2

// Concurrency makes the sink a ConcurrentSink.
func (s *Sink) Concurrency() int { return DefaultConcurrency }

// New checks the settings and prepares the writer; it connects on the
// first delivery.
func New(c Config) (*Sink, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("kafka: settings.brokers is required")
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("kafka: settings.brokers: %q is not host:port", b)
		}
	}
	if c.Topic == "" {
		return nil, errors.New("kafka: settings.topic is required")
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxMessageBytes < 1024 {
		return nil, fmt.Errorf("kafka: settings.max_message_bytes %d: want at least 1024", c.MaxMessageBytes)
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
	var comp compress.Compression
	switch strings.ToLower(c.Compression) {
	case "", "none":
	case "gzip":
		comp = compress.Gzip
	case "snappy":
		comp = compress.Snappy
	case "lz4":
		comp = compress.Lz4
	case "zstd":
		comp = compress.Zstd
	default:
		return nil, fmt.Errorf("kafka: settings.compression %q: want none, gzip, snappy, lz4 or zstd", c.Compression)
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("kafka: settings.%w", err)
	}
	mech, err := c.SASL.mechanism()
	if err != nil {
		return nil, fmt.Errorf("kafka: settings.%w", err)
	}
	w := &kafkago.Writer{
		Addr:  kafkago.TCP(c.Brokers...),
		Topic: c.Topic,
		// The Java client's partitioner: an id lands on the same partition
		// whoever writes it, so compaction and deduplication see both
		// copies of an event delivered twice.
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll,
		// A few quick retries inside the client ride out leader changes;
		// the exporter's backoff handles longer outages.
		MaxAttempts:     3,
		WriteBackoffMin: 20 * time.Millisecond,
		WriteBackoffMax: 500 * time.Millisecond,
		// kafka-go allocates room for BatchSize messages per partition
		// batch up front: keep it near what one delivery holds.
		BatchSize:  1000,
		BatchBytes: int64(c.MaxMessageBytes),
		// Deliver hands over a whole batch at once; the tail of each
		// partition's batch must not wait for more.
		BatchTimeout: time.Millisecond,
		ReadTimeout:  c.Timeout.Std(),
		WriteTimeout: c.Timeout.Std(),
		Compression:  comp,
		Transport: &kafkago.Transport{
			ClientID:    "tollgate-exporter",
			DialTimeout: 10 * time.Second,
			IdleTimeout: time.Minute,
			TLS:         tc,
			SASL:        mech,
		},
	}
	return &Sink{c: c, w: w}, nil
}

// messageOverhead approximates what kafka-go adds to key and value when
// it sizes a message (timestamp, lengths, headers' framing).
const messageOverhead = 64

// Deliver writes the batch and returns once every partition leader and its
// in-sync replicas have it (acks=all).
func (s *Sink) Deliver(ctx context.Context, recs []exporters.Record) error {
	re := exporters.RecordErrors{}
	msgs := make([]kafkago.Message, 0, len(recs))
	idx := make([]int, 0, len(recs))
	for i := range recs {
		r := &recs[i]
		m := kafkago.Message{
			Key:   []byte(r.ID),
			Value: r.Data,
			Time:  r.Time,
			Headers: []kafkago.Header{
				{Key: "event_type", Value: []byte(r.Type)},
				{Key: "event_code", Value: []byte(r.Code)},
			},
		}
		if size := len(m.Key) + len(m.Value) + len(r.Type) + len(r.Code) + messageOverhead; size > s.c.MaxMessageBytes {
			re[i] = exporters.Permanent(fmt.Errorf("kafka: event of %d bytes is over max_message_bytes %d", size, s.c.MaxMessageBytes))
			continue
		}
		msgs = append(msgs, m)
		idx = append(idx, i)
	}
	if len(msgs) > 0 {
		werrs, err := s.write(ctx, msgs)
		switch {
		case err != nil && len(re) == 0:
			return err
		case err != nil:
			for _, i := range idx {
				re[i] = err
			}
		default:
			// Messages refused for good in a batch with others are tried
			// one by one: the refusal may concern only one of them.
			var again []int
			for j, e := range werrs {
				switch {
				case e == nil:
				case permanent(e):
					again = append(again, j)
				default:
					re[idx[j]] = e
				}
			}
			for _, j := range again {
				if len(again) == 1 && len(msgs) == 1 {
					re[idx[j]] = exporters.Permanent(werrs[j])
					continue
				}
				if err := s.w.WriteMessages(ctx, msgs[j]); err != nil {
					if permanent(err) {
						err = exporters.Permanent(err)
					}
					re[idx[j]] = err
				}
			}
		}
	}
	if len(re) == 0 {
		return nil
	}
	return re
}

// write writes msgs. It returns one error per message (nil when all were
// written), or an error about the whole call.
func (s *Sink) write(ctx context.Context, msgs []kafkago.Message) (kafkago.WriteErrors, error) {
	err := s.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return nil, nil
	}
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		return we, nil
	}
	var tooLarge kafkago.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		// Sizes are checked before writing; kafka-go sized one message
		// differently: find it by writing them one by one.
		we = make(kafkago.WriteErrors, len(msgs))
		for i := range we {
			we[i] = err
		}
		return we, nil
	}
	return nil, fmt.Errorf("kafka: %w", err)
}

// permanent says whether the brokers refuse a message for what it is, so
// that sending it again cannot succeed.
func permanent(err error) bool {
	var tooLarge kafkago.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return true
	}
	var ke kafkago.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafkago.MessageSizeTooLarge, kafkago.RecordListTooLarge, kafkago.InvalidRecord:
			return true
		}
	}
	return false
}

// Close flushes and closes the writer's connections.
func (s *Sink) Close() error { return s.w.Close() }
