package ca

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// WriteDBFiles writes what a PostgreSQL server needs for TLS with client
// certificates, as `tollgate auth sign --format=db` does:
//
//	PREFIX.crt  server certificate signed by the db CA  (ssl_cert_file)
//	PREFIX.key  its key, mode 0600                        (ssl_key_file)
//	PREFIX.cas  the db-client CA certificate              (ssl_ca_file)
//
// MySQL/MariaDB take the same three files as ssl_cert, ssl_key and ssl_ca.
// It returns the paths written.
func (a *Authorities) WriteDBFiles(prefix string, hosts []string, ttl time.Duration) ([]string, error) {
	if prefix == "" {
		return nil, fmt.Errorf("ca: no output prefix")
	}
	certPEM, keyPEM, casPEM, err := a.IssueDBServer(hosts, ttl)
	if err != nil {
		return nil, err
	}
	files := []outFile{
		{prefix + ".key", keyPEM, 0o600},
		{prefix + ".crt", certPEM, 0o644},
		{prefix + ".cas", casPEM, 0o644},
	}
	return writeOut(files)
}

// WriteCockroachFiles writes a CockroachDB certs directory, as `tollgate
// auth sign --format=cockroachdb` does:
//
//	DIR/ca.crt         the db CA, which signed node.crt
//	DIR/ca-client.crt  the db-client CA, which CockroachDB trusts for clients
//	DIR/node.crt       node certificate: CN node, SANs node and hosts
//	DIR/node.key       its key, mode 0600 (CockroachDB refuses wider)
//
// It returns the paths written.
func (a *Authorities) WriteCockroachFiles(dir string, hosts []string, ttl time.Duration) ([]string, error) {
	if dir == "" {
		return nil, fmt.Errorf("ca: no output directory")
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("ca: CockroachDB node certificate needs at least one --host")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	certPEM, keyPEM, err := a.IssueCockroachNode(hosts, ttl)
	if err != nil {
		return nil, err
	}
	dbCA, err := a.CertPEM(DB)
	if err != nil {
		return nil, err
	}
	clientCA, err := a.CertPEM(DBClient)
	if err != nil {
		return nil, err
	}
	files := []outFile{
		{filepath.Join(dir, "node.key"), keyPEM, 0o600},
		{filepath.Join(dir, "node.crt"), certPEM, 0o644},
		{filepath.Join(dir, "ca.crt"), dbCA, 0o644},
		{filepath.Join(dir, "ca-client.crt"), clientCA, 0o644},
	}
	return writeOut(files)
}

type outFile struct {
	path string
	data []byte
	mode os.FileMode
}

func writeOut(files []outFile) ([]string, error) {
	var paths []string
	for _, f := range files {
		if err := writeAtomic(f.path, f.data, f.mode); err != nil {
			return paths, err
		}
		paths = append(paths, f.path)
	}
	return paths, nil
}
