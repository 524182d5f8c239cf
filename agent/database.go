package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
)

// Database is one configured database with what the agent derives from its
// configuration once: labels, upstream address and how to verify it.
type Database struct {
	Config config.Database
	// Host and Addr (host:port) of the database.
	Host, Addr string
	// Strict is true when audit_mode is strict: client messages are
	// forwarded only after their events are stored.
	Strict bool
	roots  *x509.CertPool
}

// NewDatabase checks a database's configuration and loads its CA file.
func NewDatabase(c config.Database) (*Database, error) {
	host, port, err := SplitURI(c.URI, protocol.Get(c.Protocol).DefaultPort)
	if err != nil {
		return nil, fmt.Errorf("database %q: uri: %w", c.Name, err)
	}
	d := &Database{Config: c, Host: host, Addr: net.JoinHostPort(host, port)}
	switch c.AuditMode {
	case "", "strict":
		d.Strict = true
	case "async":
	default:
		return nil, fmt.Errorf("database %q: audit_mode %q is not strict or async", c.Name, c.AuditMode)
	}
	switch c.TLS.Mode {
	case "", "verify-full", "verify-ca":
		if c.TLS.CACertFile != "" {
			pem, err := os.ReadFile(c.TLS.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("database %q: tls.ca_cert_file: %w", c.Name, err)
			}
			d.roots = x509.NewCertPool()
			if c.TLS.TrustSystemCertPool {
				if sys, err := x509.SystemCertPool(); err == nil {
					d.roots = sys
				}
			}
			if !d.roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("database %q: tls.ca_cert_file %s holds no PEM certificate", c.Name, c.TLS.CACertFile)
			}
		}
	case "insecure":
	default:
		return nil, fmt.Errorf("database %q: tls.mode %q is not verify-full, verify-ca or insecure", c.Name, c.TLS.Mode)
	}
	return d, nil
}

// Info is the database as the access decision sees it.
func (d *Database) Info() DatabaseInfo {
	return DatabaseInfo{Name: d.Config.Name, Protocol: d.Config.Protocol, URI: d.Config.URI, Labels: maps.Clone(d.Config.StaticLabels)}
}

// UpstreamTLS is the TLS configuration the agent uses towards the database:
// it presents cert and verifies the database per tls.mode: verify-full
// checks chain and host name, verify-ca the chain only, insecure nothing.
func (d *Database) UpstreamTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: d.roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	name := d.Config.TLS.ServerName
	if name == "" {
		name = d.Host
	}
	switch d.Config.TLS.Mode {
	case "insecure":
		cfg.InsecureSkipVerify = true
	case "verify-ca":
		// Go has no chain-only mode: skip its check and verify the
		// chain ourselves, ignoring the name.
		cfg.InsecureSkipVerify = true
		roots := d.roots
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("database presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("database certificate (verify-ca): %w", err)
			}
			return nil
		}
	default:
		cfg.ServerName = name
	}
	return cfg
}

// SplitURI returns host and port of a database URI: host:port, host, or a
// URL such as postgres://host:port/db.
func SplitURI(uri, defaultPort string) (host, port string, err error) {
	if uri == "" {
		return "", "", errors.New("empty")
	}
	if strings.Contains(uri, "://") {
		u, err := url.Parse(uri)
		if err != nil {
			return "", "", err
		}
		host, port = u.Hostname(), u.Port()
	} else if h, p, err := net.SplitHostPort(uri); err == nil {
		host, port = h, p
	} else {
		host = uri
	}
	if host == "" {
		return "", "", fmt.Errorf("%q names no host", uri)
	}
	if port == "" {
		port = defaultPort
	}
	if port == "" {
		return "", "", fmt.Errorf("%q names no port", uri)
	}
	return host, port, nil
}
