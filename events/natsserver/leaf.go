package natsserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tollgate-db/tollgate/config"
)

// Leaf makes an embedded server a leaf node of a hub NATS cluster with a
// JetStream domain of its own (DESIGN.md §3, nats.leaf in the
// configuration). The process's own streams live in that domain, so the
// publisher's acknowledgements come from this machine and auditing goes on
// while the hub is out of reach; the hub's AUDIT stream sources the leaf's
// (events.KeepLeafSourced) and catches up when the link returns.
type Leaf struct {
	// HubURLs are the hub's leaf node listeners: nats-leaf://host:port,
	// tls://host:port or host:port.
	HubURLs []string
	// Domain is this leaf's JetStream domain.
	Domain string
	// CredsFile authenticates to the hub.
	CredsFile string
	// TLS of the link to the hub; nil for plain TCP, unless TLSFiles
	// names files to load it from.
	TLS      *tls.Config
	TLSFiles config.TLS
	// ReconnectInterval is how often a lost link is tried again; 1s when
	// zero.
	ReconnectInterval time.Duration
}

// LeafIsolated are the subjects that never cross the link, either way.
// Each side stores its own audit, state and objects in its own domain;
// were these subjects shared, a hub-side stream would store the leaf's
// events directly as well as through its source (and the leaf the hub's),
// and state would mix two control planes. Events reach the hub only by
// sourcing, which resumes where it stopped after a cut.
var LeafIsolated = []string{"audit.>", "state.>", "deadletter.>", "$O.>"}

// apply adds the leaf node remote and the JetStream domain to so.
func (l *Leaf) apply(so *server.Options) error {
	if len(l.HubURLs) == 0 {
		return errors.New("leaf: no hub URLs")
	}
	if l.Domain == "" {
		return errors.New("leaf: a JetStream domain is required")
	}
	r := &server.RemoteLeafOpts{
		Credentials: l.CredsFile,
		DenyImports: LeafIsolated,
		DenyExports: LeafIsolated,
	}
	for _, s := range l.HubURLs {
		u, err := leafURL(s)
		if err != nil {
			return fmt.Errorf("leaf: hub URL %q: %w", s, err)
		}
		r.URLs = append(r.URLs, u)
	}
	tc := l.TLS
	if tc == nil {
		var err error
		if tc, err = loadTLS(l.TLSFiles); err != nil {
			return err
		}
	}
	if tc != nil {
		r.TLS, r.TLSConfig = true, tc.Clone()
	}
	so.JetStreamDomain = l.Domain
	so.LeafNode.Remotes = append(so.LeafNode.Remotes, r)
	so.LeafNode.ReconnectInterval = l.ReconnectInterval
	if so.LeafNode.ReconnectInterval == 0 {
		so.LeafNode.ReconnectInterval = time.Second
	}
	return nil
}

func leafURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "nats-leaf://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.Port() == "" {
		return nil, errors.New("want host:port or nats-leaf://host:port")
	}
	return u, nil
}

// LeafFromConfig returns the leaf options of nats.leaf, nil when the
// configuration has none.
func LeafFromConfig(c *config.Config) *Leaf {
	lc := c.NATS.Leaf
	if lc == nil {
		return nil
	}
	return &Leaf{HubURLs: lc.HubURLs, Domain: lc.Domain, CredsFile: lc.CredsFile, TLSFiles: lc.TLS}
}

// loadTLS reads the files of nats.leaf.tls; nil when none is named.
func loadTLS(t config.TLS) (*tls.Config, error) {
	if t.CAFile == "" && t.CertFile == "" && t.KeyFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("nats.leaf.tls.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats.leaf.tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("nats.leaf.tls.cert_file and key_file go together: one of them is empty")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats.leaf.tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
