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
		roles := lookup(id.Roles)
		d := access.Decide(id, roles,
			access.Database{Name: db.Name, Labels: db.Labels, IgnoreDBName: access.IgnoresDBName(db.Protocol)},
			dbUser, dbName)
		return Decision{Allowed: d.Allowed, Rule: d.Rule, Refused: d.Refused, Reason: d.Reason, Options: access.Options(roles)}
	}
}

// IssueFunc signs a db-client certificate for dbUser over pub
// (ca.Authorities.IssueDBClient has this shape).
type IssueFunc func(pub crypto.PublicKey, dbUser string, ttl time.Duration) (*x509.Certificate, []byte, error)

// IssueForFunc is an IssueFunc told which database the certificate is
// for: a broker signing for an agent on another machine signs only for
// the databases that agent serves.
type IssueForFunc func(pub crypto.PublicKey, database, dbUser string, ttl time.Duration) (*x509.Certificate, []byte, error)

// CachedClientCerts is a ClientCertProvider that signs one certificate per
// database user with issue and reuses it until a fifth of its life is left,
// so a busy agent does not sign on every connection.
func CachedClientCerts(issue IssueFunc, ttl time.Duration) ClientCertProvider {
	return CachedDatabaseClientCerts(func(pub crypto.PublicKey, _, dbUser string, ttl time.Duration) (*x509.Certificate, []byte, error) {
		return issue(pub, dbUser, ttl)
	}, ttl)
}

// CachedDatabaseClientCerts is CachedClientCerts for an issue that needs
// the database: one certificate per database and database user.
func CachedDatabaseClientCerts(issue IssueForFunc, ttl time.Duration) ClientCertProvider {
	type key struct{ db, user string }
	type entry struct {
		cert    *tls.Certificate
		renewAt time.Time
	}
	var (
		mu    sync.Mutex
		cache = map[key]entry{}
	)
	return func(_ context.Context, db DatabaseInfo, dbUser string) (*tls.Certificate, error) {
		k := key{db.Name, dbUser}
		mu.Lock()
		defer mu.Unlock()
		if e, ok := cache[k]; ok && time.Now().Before(e.renewAt) {
			return e.cert, nil
		}
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		cert, _, err := issue(priv.Public(), db.Name, dbUser, ttl)
		if err != nil {
			return nil, fmt.Errorf("signing a db-client certificate for %q: %w", dbUser, err)
		}
		tc := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: priv, Leaf: cert}
		life := cert.NotAfter.Sub(cert.NotBefore)
		cache[k] = entry{cert: tc, renewAt: cert.NotAfter.Add(-life / 5)}
		return tc, nil
	}
}
