package service

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/config"
)

// authorities is what the agent needs from Tollgate's certificate
// authorities: its host certificate (what clients verify, and its identity
// towards the broker), the user CAs (what it verifies clients with), the db
// CA (what it verifies databases with by default) and db-client
// certificates (what it logs in to databases with).
//
// Beside the broker, with its data dir, these come from the CAs themselves.
// An agent on another machine joins once with a token: the broker signs its
// host certificate and sends the CA certificates, all kept in
// <data_dir>/agent/joined; db-client certificates are then signed by the
// broker's API for the host certificate, since the CA key stays there.
type authorities struct {
	host    tls.Certificate
	hostCA  *x509.Certificate
	userCAs *x509.CertPool
	dbCAPEM []byte
	issue   agent.IssueForFunc
	// local is the data dir's CAs, nil for an agent that joined: SQL
	// Server's Kerberos PKINIT certificates are signed with them.
	local *ca.Authorities
	// broker is the API client of an agent that joined (mTLS with its host
	// certificate), nil beside the broker.
	broker *api.Client
}

// localAuthorities are the CAs of the data dir, shared with the broker.
func localAuthorities(dataDir, hostID string, names []string) (*authorities, error) {
	cas, err := ca.Open(dataDir)
	if err != nil {
		return nil, fmt.Errorf("agent service: %w", err)
	}
	a := &authorities{local: cas, issue: func(pub crypto.PublicKey, _, dbUser string, ttl time.Duration) (*x509.Certificate, []byte, error) {
		return cas.IssueDBClient(pub, dbUser, ttl)
	}}
	if a.host, err = hostCertificate(cas, hostID, names); err != nil {
		return nil, err
	}
	if a.hostCA, err = cas.Cert(ca.Host); err != nil {
		return nil, err
	}
	if a.userCAs, err = cas.Pool(ca.User); err != nil {
		return nil, err
	}
	if a.dbCAPEM, err = cas.CertPEM(ca.DB); err != nil {
		return nil, err
	}
	return a, nil
}

// Files of a joined agent in <data_dir>/agent/joined.
const (
	joinedKey    = "host.key"
	joinedCert   = "host.crt"
	joinedHostCA = "host-ca.crt"
	joinedUserCA = "user-ca.crt"
	joinedDBCA   = "db-ca.crt"
)

// joinedAuthorities joins the broker at db_service.broker_addr (else the
// first of db_service.proxy_addrs) with
// db_service.join_token the first time, and afterwards uses what it got.
func joinedAuthorities(ctx context.Context, cfg *config.Config, hostID string, names []string) (*authorities, error) {
	// An agent that tunnels to proxies reaches the broker's API on the
	// first proxy's port unless told otherwise: the proxy hands it on.
	if cfg.DBService.BrokerAddr == "" && len(cfg.DBService.ProxyAddrs) > 0 {
		c := *cfg
		c.DBService.BrokerAddr = c.DBService.ProxyAddrs[0]
		cfg = &c
	}
	d := cfg.DBService
	if d.BrokerAddr == "" {
		return nil, errRemoteJoin(cfg)
	}
	serverName, err := api.ServerName(d.BrokerAddr)
	if err != nil {
		return nil, fmt.Errorf("db_service.broker_addr: %w", err)
	}
	dir := filepath.Join(cfg.DataDir, "agent", "joined")
	a, err := loadJoined(dir)
	if errors.Is(err, os.ErrNotExist) {
		a, err = join(ctx, cfg, dir, serverName, hostID, names)
	}
	if err != nil {
		return nil, err
	}
	leaf := a.host.Leaf
	if time.Now().After(leaf.NotAfter) {
		return nil, fmt.Errorf("agent service: the host certificate from joining expired at %s: remove %s and join again with a new db_service.join_token", leaf.NotAfter.UTC().Format(time.RFC3339), dir)
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.hostCA)
	client, err := api.NewClient(d.BrokerAddr, api.TLSConfig(serverName, pool, &a.host), "tollgate-agent")
	if err != nil {
		return nil, err
	}
	// A database or address added since, or a certificate in the last
	// fifth of its life: the current certificate asks for a fresh one.
	stale := time.Until(leaf.NotAfter) < leaf.NotAfter.Sub(leaf.NotBefore)/5
	for _, n := range names {
		stale = stale || leaf.VerifyHostname(n) != nil
	}
	if stale {
		if a, err = renew(ctx, client, dir, names); err != nil {
			return nil, fmt.Errorf("agent service: renewing the host certificate at the broker %s: %w", d.BrokerAddr, err)
		}
		if client, err = api.NewClient(d.BrokerAddr, api.TLSConfig(serverName, pool, &a.host), "tollgate-agent"); err != nil {
			return nil, err
		}
	}
	a.broker = client
	a.issue = func(pub crypto.PublicKey, database, dbUser string, ttl time.Duration) (*x509.Certificate, []byte, error) {
		pubPEM, err := api.EncodePublicKey(pub)
		if err != nil {
			return nil, nil, err
		}
		ictx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		res, err := client.AgentDBClient(ictx, api.DBClientRequest{Database: database, DBUser: dbUser, PublicKey: pubPEM, TTL: api.Duration(ttl)})
		if err != nil {
			return nil, nil, fmt.Errorf("the broker at %s: %w", d.BrokerAddr, err)
		}
		cert, err := api.ParseCertificatePEM([]byte(res.CertPEM))
		if err != nil {
			return nil, nil, fmt.Errorf("the broker's db-client certificate: %w", err)
		}
		return cert, []byte(res.CertPEM), nil
	}
	return a, nil
}

// join exchanges the token for a host certificate, trusting the broker by
// the pinned fingerprint of its host CA, and keeps what it got in dir.
func join(ctx context.Context, cfg *config.Config, dir, serverName, hostID string, names []string) (*authorities, error) {
	d := cfg.DBService
	return joinAt(ctx, joinSpec{addr: d.BrokerAddr, token: d.JoinToken, pin: d.BrokerCAPin, section: "db_service", tokenType: "db"},
		dir, serverName, hostID, names)
}

// joinSpec is where and with what a host joins: section is the
// configuration's section that holds token and pin, tokenType what
// `tollgate tokens add` makes them for.
type joinSpec struct {
	addr, token, pin   string
	section, tokenType string
}

func joinAt(ctx context.Context, j joinSpec, dir, serverName, hostID string, names []string) (*authorities, error) {
	if j.token == "" || j.pin == "" {
		return nil, fmt.Errorf("joining the broker at %s needs %s.join_token and %s.broker_ca_pin (`tollgate tokens add --type=%s` prints both)", j.addr, j.section, j.section, j.tokenType)
	}
	pin, err := api.ParsePin(j.pin)
	if err != nil {
		return nil, fmt.Errorf("%s.broker_ca_pin: %w", j.section, err)
	}
	tc := api.FirstUseTLSConfig(serverName, func(hostCA *x509.Certificate) error {
		if got := api.Fingerprint(hostCA); got != pin {
			return fmt.Errorf("the broker's host CA is %s, not %s.broker_ca_pin %s", got, j.section, pin)
		}
		return nil
	}, nil)
	client, err := api.NewClient(j.addr, tc, "tollgate-"+j.tokenType)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	key, pubPEM, err := newHostKey()
	if err != nil {
		return nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := client.Join(jctx, api.JoinRequest{Token: j.token, HostID: hostID, Hosts: names, PublicKey: pubPEM})
	if err != nil {
		return nil, fmt.Errorf("joining the broker at %s: %w", j.addr, err)
	}
	return keep(dir, key, res)
}

// JoinProxy is the host certificate of a proxy without the broker beside
// it, valid for names (the host of its public address), and the host CA
// that verifies agents and other proxies. The first time it joins the
// broker at brokerAddr with a token of type proxy, trusting the broker by
// pin; it keeps what it got in dir and reads it back at every start
// after.
func JoinProxy(ctx context.Context, brokerAddr, token, pin, dir string, names []string) (tls.Certificate, *x509.Certificate, error) {
	serverName, err := api.ServerName(brokerAddr)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("proxy.broker_addr: %w", err)
	}
	a, err := loadJoined(dir)
	if errors.Is(err, os.ErrNotExist) {
		a, err = joinAt(ctx, joinSpec{addr: brokerAddr, token: token, pin: pin, section: "proxy", tokenType: "proxy"},
			dir, serverName, ca.ProxyHostID, names)
	}
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf := a.host.Leaf
	if cn := leaf.Subject.CommonName; cn != ca.ProxyHostID {
		return tls.Certificate{}, nil, fmt.Errorf("the certificate in %s is for host %q, not a proxy's", dir, cn)
	}
	if time.Now().After(leaf.NotAfter) {
		return tls.Certificate{}, nil, fmt.Errorf("the proxy's certificate expired at %s: remove %s and join again with a new proxy.join_token", leaf.NotAfter.UTC().Format(time.RFC3339), dir)
	}
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return tls.Certificate{}, nil, fmt.Errorf("the proxy's certificate in %s does not name %s (proxy.public_addr changed?): remove %s and join again with a new proxy.join_token", dir, n, dir)
		}
	}
	return a.host, a.hostCA, nil
}

// RenewProxy asks the broker at brokerAddr for a fresh certificate of the
// proxy for names, presenting the one JoinProxy kept in dir, and keeps the
// new one there in its place, as an agent renews its host certificate.
func RenewProxy(ctx context.Context, brokerAddr, dir string, names []string) (tls.Certificate, error) {
	serverName, err := api.ServerName(brokerAddr)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proxy.broker_addr: %w", err)
	}
	a, err := loadJoined(dir)
	if err != nil {
		return tls.Certificate{}, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.hostCA)
	client, err := api.NewClient(brokerAddr, api.TLSConfig(serverName, pool, &a.host), "tollgate-proxy")
	if err != nil {
		return tls.Certificate{}, err
	}
	defer client.Close()
	if a, err = renew(ctx, client, dir, names); err != nil {
		return tls.Certificate{}, fmt.Errorf("renewing the proxy's certificate at the broker %s: %w", brokerAddr, err)
	}
	return a.host, nil
}

// renew asks for a fresh host certificate for names with the current one
// (client presents it) and keeps it in dir.
func renew(ctx context.Context, client *api.Client, dir string, names []string) (*authorities, error) {
	key, pubPEM, err := newHostKey()
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := client.AgentRenew(rctx, api.RenewHostRequest{Hosts: names, PublicKey: pubPEM})
	if err != nil {
		return nil, err
	}
	return keep(dir, key, res)
}

// newHostKey is a fresh key for a host certificate and its public half as
// the API's requests carry it.
func newHostKey() (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	pubPEM, err := api.EncodePublicKey(key.Public())
	return key, pubPEM, err
}

// keep writes the host key and what the broker sent with its certificate
// into dir, and reads it back.
func keep(dir string, key *ecdsa.PrivateKey, res *api.Certificate) (*authorities, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent service: %w", err)
	}
	files := map[string][]byte{
		joinedCert: []byte(res.CertPEM), joinedHostCA: []byte(res.HostCAPEM),
		joinedUserCA: []byte(res.UserCAPEM), joinedDBCA: []byte(res.DBCAPEM),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("agent service: %w", err)
		}
	}
	// The key last, replaced whole: its presence says the join completed,
	// and a renewal cut short leaves a key that does not match the new
	// certificate, which loadJoined reports.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	tmp := filepath.Join(dir, joinedKey+".new")
	if err := os.WriteFile(tmp, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("agent service: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, joinedKey)); err != nil {
		return nil, fmt.Errorf("agent service: %w", err)
	}
	return loadJoined(dir)
}

// loadJoined reads what a join kept; os.ErrNotExist when the agent has not
// joined yet.
func loadJoined(dir string) (*authorities, error) {
	if _, err := os.Stat(filepath.Join(dir, joinedKey)); err != nil {
		return nil, err
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("agent service: what joining kept: %w", err)
		}
		return b, nil
	}
	var files [5][]byte
	for i, name := range []string{joinedKey, joinedCert, joinedHostCA, joinedUserCA, joinedDBCA} {
		var err error
		if files[i], err = read(name); err != nil {
			return nil, err
		}
	}
	host, err := tls.X509KeyPair(files[1], files[0])
	if err != nil {
		return nil, fmt.Errorf("agent service: the host certificate from joining: %w", err)
	}
	a := &authorities{host: host, dbCAPEM: files[4], userCAs: x509.NewCertPool()}
	if a.hostCA, err = api.ParseCertificatePEM(files[2]); err != nil {
		return nil, fmt.Errorf("agent service: the host CA from joining: %w", err)
	}
	if !a.userCAs.AppendCertsFromPEM(files[3]) {
		return nil, errors.New("agent service: the user CA from joining holds no certificate")
	}
	// Clients get the CA after the agent's own certificate, as from an
	// agent beside the broker.
	if !slices.ContainsFunc(host.Certificate[1:], func(der []byte) bool { return string(der) == string(a.hostCA.Raw) }) {
		a.host.Certificate = append(a.host.Certificate, a.hostCA.Raw)
	}
	return a, nil
}

// HostTLS is the client TLS of an agent that joined a broker elsewhere:
// its host certificate, joining with db_service.join_token the first
// time, and the host CA that verifies proxies. It is what the agent
// reaches the event plane through a proxy with, before it starts.
func HostTLS(ctx context.Context, cfg *config.Config) (*tls.Config, error) {
	hostID, err := loadHostID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a, err := joinedAuthorities(ctx, cfg, hostID, hostNames(cfg.DBService.Databases))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.hostCA)
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{a.host}, RootCAs: roots}, nil
}
