package exporters

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/config/strictyaml"
)

// Delivery holds the settings every exporter has, whatever its sink. They
// sit in the exporter's settings beside the sink's own keys.
type Delivery struct {
	// BatchSize is the most events delivered at once. A fetch stops at
	// the message that reaches it, so a frame is never split between
	// fetches; its events are cut into batches of this size.
	BatchSize int `yaml:"batch_size"`
	// BatchBytes is the most bytes of events fetched at once; it is raised
	// to the largest message the server accepts, so one event always fits.
	BatchBytes int `yaml:"batch_bytes"`
	// Linger is how long a fetch waits for a batch to fill before
	// delivering what it has.
	Linger config.Duration `yaml:"linger"`
	// AckWait is how long JetStream waits for an acknowledgement before it
	// gives an event to another replica; the exporter extends it while it
	// works on an event, so it only matters after a crash.
	AckWait config.Duration `yaml:"ack_wait"`
	// BackoffMin and BackoffMax bound the exponential backoff (with
	// jitter) between failed deliveries.
	BackoffMin config.Duration `yaml:"backoff_min"`
	BackoffMax config.Duration `yaml:"backoff_max"`
	// ShutdownGrace is how long a delivery under way may finish at
	// shutdown; what is not confirmed by then is delivered again later.
	ShutdownGrace config.Duration `yaml:"shutdown_grace"`
	// Concurrency is how many batches are delivered at once: 1, or more
	// for sinks that take it (Kafka, Splunk HEC), whose own default
	// applies when it is 0.
	Concurrency int `yaml:"concurrency"`
	// Start is where a new exporter begins: all (every stored event, the
	// default) or new (events stored from now on).
	Start string `yaml:"start"`
	// Streams to export: AUDIT and STATE by default. AUDIT holds a copy of
	// every STATE event (broker/trail): with both, each is delivered from
	// STATE only; with AUDIT alone, from its copy.
	Streams []string `yaml:"streams"`
}

// Defaults of Delivery.
const (
	DefaultBatchSize     = 1000
	DefaultBatchBytes    = 4 << 20
	DefaultLinger        = 500 * time.Millisecond
	DefaultAckWait       = 30 * time.Second
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	DefaultShutdownGrace = 5 * time.Second
)

func (d *Delivery) fillDefaults() {
	if d.BatchSize == 0 {
		d.BatchSize = DefaultBatchSize
	}
	if d.BatchBytes == 0 {
		d.BatchBytes = DefaultBatchBytes
	}
	if d.Linger == 0 {
		d.Linger = config.Duration(DefaultLinger)
	}
	if d.AckWait == 0 {
		d.AckWait = config.Duration(DefaultAckWait)
	}
	if d.BackoffMin == 0 {
		d.BackoffMin = config.Duration(DefaultBackoffMin)
	}
	if d.BackoffMax == 0 {
		d.BackoffMax = config.Duration(DefaultBackoffMax)
	}
	if d.ShutdownGrace == 0 {
		d.ShutdownGrace = config.Duration(DefaultShutdownGrace)
	}
	if d.Concurrency == 0 {
		d.Concurrency = 1
	}
	if d.Start == "" {
		d.Start = "all"
	}
	if len(d.Streams) == 0 {
		d.Streams = []string{"AUDIT", "STATE"}
	}
}

func (d *Delivery) validate() error {
	var errs []string
	if d.BatchSize < 1 || d.BatchSize > 100000 {
		errs = append(errs, fmt.Sprintf("batch_size %d: want 1 to 100000", d.BatchSize))
	}
	if d.BatchBytes < 1024 {
		errs = append(errs, fmt.Sprintf("batch_bytes %d: want at least 1024", d.BatchBytes))
	}
	if d.Linger.Std() < time.Millisecond || d.Linger.Std() > time.Minute {
		errs = append(errs, fmt.Sprintf("linger %s: want 1ms to 1m", d.Linger.Std()))
	}
	if d.AckWait.Std() < time.Second {
		errs = append(errs, fmt.Sprintf("ack_wait %s: want at least 1s", d.AckWait.Std()))
	}
	if d.BackoffMin.Std() <= 0 || d.BackoffMax.Std() < d.BackoffMin.Std() {
		errs = append(errs, fmt.Sprintf("backoff_min %s, backoff_max %s: want 0 < min <= max", d.BackoffMin.Std(), d.BackoffMax.Std()))
	}
	if d.ShutdownGrace.Std() < 0 {
		errs = append(errs, fmt.Sprintf("shutdown_grace %s is negative", d.ShutdownGrace.Std()))
	}
	if d.Concurrency < 1 || d.Concurrency > 64 {
		errs = append(errs, fmt.Sprintf("concurrency %d: want 1 to 64", d.Concurrency))
	}
	if d.Start != "all" && d.Start != "new" {
		errs = append(errs, fmt.Sprintf("start %q: want all or new", d.Start))
	}
	for _, s := range d.Streams {
		if s != "AUDIT" && s != "STATE" {
			errs = append(errs, fmt.Sprintf("streams: %q is not AUDIT or STATE", s))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// splitSettings separates the delivery keys from the sink's own keys of an
// exporter's settings mapping. Both keep their line numbers.
func splitSettings(n *yaml.Node) (delivery, sink *yaml.Node, err error) {
	if n == nil || n.Kind == 0 {
		return nil, nil, nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("line %d: settings must be a mapping", n.Line)
	}
	known := strictyaml.Fields(reflect.TypeOf(Delivery{}))
	delivery = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	sink = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		dst := sink
		if _, ok := known[k.Value]; ok {
			dst = delivery
		}
		dst.Content = append(dst.Content, k, v)
	}
	return delivery, sink, nil
}

// decodeStrict decodes settings strictly: a key v has no field for, or a
// value of the wrong type, is an error naming the key path (under where) and
// its line, since a misspelt delivery or TLS setting must not be ignored.
func decodeStrict(n *yaml.Node, v any, where string) error {
	return strictyaml.DecodeNode(n, v, where)
}
