package natsserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// TLS files of the embedded server's client listener, beside the
// credentials. The certificate is its own authority: clients pin it.
const (
	TLSCertFile = "server.crt"
	tlsKeyFile  = "server.key"
)

// serverCertTTL is long: the certificate is pinned, not chained, and is
// made anew when a listener's host is not in it or it is near its end.
const serverCertTTL = 5 * 365 * 24 * time.Hour

// ServerTLS returns the TLS configuration of the embedded listener,
// creating a self-signed certificate in dir for the loopback names, the
// machine's name and listenHost when there is none that names them all.
func ServerTLS(dir, listenHost string) (*tls.Config, error) {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if listenHost != "" && listenHost != "0.0.0.0" && listenHost != "::" && !slices.Contains(hosts, listenHost) {
		hosts = append(hosts, listenHost)
	}
	certPath, keyPath := filepath.Join(dir, TLSCertFile), filepath.Join(dir, tlsKeyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil && !covers(cert, hosts) {
		err = errors.New("renew")
	}
	if err != nil {
		if err := writeServerCert(certPath, keyPath, hosts); err != nil {
			return nil, fmt.Errorf("natsserver: TLS certificate: %w", err)
		}
		if cert, err = tls.LoadX509KeyPair(certPath, keyPath); err != nil {
			return nil, fmt.Errorf("natsserver: TLS certificate: %w", err)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// covers reports whether the certificate names every host and has a year left.
func covers(c tls.Certificate, hosts []string) bool {
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil || time.Until(leaf.NotAfter) < 365*24*time.Hour {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func writeServerCert(certPath, keyPath string, hosts []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return err
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tollgate event store"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(serverCertTTL),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile replaces path atomically, so a reader never sees half a file.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
