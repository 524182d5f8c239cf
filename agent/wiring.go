package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// RoleAuthorizer is the production Authorizer: access.Decide over the roles
// the identity holds, as the agent's copy of the state knows them. lookup
// returns the roles of the given names (unknown names are left out, so they
// grant nothing).
func RoleAuthorizer(lookup func(names []string) []access.Role) Authorizer {
	return func(id identity.Identity, db DatabaseInfo, dbUser, dbName string) Decision {
		d := access.Decide(id, lookup(id.Roles),
			access.Database{Name: db.Name, Labels: db.Labels, IgnoreDBName: access.IgnoresDBName(db.Protocol)},
			dbUser, dbName)
		return Decision{Allowed: d.Allowed, Rule: d.Rule, Refused: d.Refused, Reason: d.Reason}
	}
}

// IssueFunc signs a db-client certificate for dbUser over pub
// (ca.Authorities.IssueDBClient has this shape).
type IssueFunc func(pub crypto.PublicKey, dbUser string, ttl time.Duration) (*x509.Certificate, []byte, error)

// CachedClientCerts is a ClientCertProvider that signs one certificate per
// database user with issue and reuses it until a fifth of its life is left,
// so a busy agent does not sign on every connection.
func CachedClientCerts(issue IssueFunc, ttl time.Duration) ClientCertProvider {
	type entry struct {
		cert    *tls.Certificate
		renewAt time.Time
	}
	var (
		mu    sync.Mutex
		cache = map[string]entry{}
	)
	return func(_ context.Context, _ DatabaseInfo, dbUser string) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if e, ok := cache[dbUser]; ok && time.Now().Before(e.renewAt) {
			return e.cert, nil
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		cert, _, err := issue(key.Public(), dbUser, ttl)
		if err != nil {
			return nil, fmt.Errorf("signing a db-client certificate for %q: %w", dbUser, err)
		}
		tc := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		life := cert.NotAfter.Sub(cert.NotBefore)
		cache[dbUser] = entry{cert: tc, renewAt: cert.NotAfter.Add(-life / 5)}
		return tc, nil
	}
}
