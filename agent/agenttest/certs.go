package agenttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// Key is a new P-256 key, the kind Tollgate's certificates hold.
func Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// Cert issues a user certificate of the stack's authorities.
func (s *Stack) Cert(t testing.TB, id identity.Identity, ttl time.Duration) tls.Certificate {
	t.Helper()
	return UserCert(t, s.CAs, id, ttl)
}

// UserCert issues a user certificate of cas, with its leaf.
func UserCert(t testing.TB, cas *ca.Authorities, id identity.Identity, ttl time.Duration) tls.Certificate {
	t.Helper()
	key := Key(t)
	c, _, err := cas.IssueUser(key.Public(), id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// HostCert issues an agent's host certificate for names, valid for an
// hour.
func (s *Stack) HostCert(t testing.TB, id string, names []string) tls.Certificate {
	t.Helper()
	return HostCert(t, s.CAs, id, names, time.Hour)
}

// HostCert issues a host certificate of cas for names, with its leaf.
func HostCert(t testing.TB, cas *ca.Authorities, id string, names []string, ttl time.Duration) tls.Certificate {
	t.Helper()
	key := Key(t)
	cert, _, err := cas.IssueHost(key.Public(), id, names, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}
