package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Admin is what the admin commands need from a broker: a Client talks to a
// remote one over HTTPS, broker/admin serves a local data dir directly.
type Admin interface {
	AddUser(ctx context.Context, req AddUserRequest) (*AddUserResponse, error)
	Users(ctx context.Context) ([]User, error)
	RemoveUser(ctx context.Context, name string) error
	// ResetMFA removes every second factor of a user (one who lost them).
	ResetMFA(ctx context.Context, name string) error
	UpsertRoles(ctx context.Context, yaml string) ([]RoleResult, error)
	Roles(ctx context.Context) ([]Role, error)
	AddToken(ctx context.Context, req AddTokenRequest) (*AddTokenResponse, error)
	Tokens(ctx context.Context) ([]Token, error)
	Databases(ctx context.Context) ([]Database, error)
	SignIdentity(ctx context.Context, req SignIdentityRequest) (*Certificate, error)
	SignDB(ctx context.Context, req SignDBRequest) (*SignDBResponse, error)
	UpsertConnectors(ctx context.Context, yaml string) ([]ConnectorResult, error)
	Connectors(ctx context.Context) ([]Connector, error)
	RemoveConnector(ctx context.Context, name string) error
}

// Fingerprint is how CA certificates are named to people and pinned:
// "sha256:" and the hex SHA-256 of the DER, as `openssl x509 -fingerprint
// -sha256` computes it (without the colons).
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParsePin normalises a pin given on the command line: "sha256:HEX" or the
// hex alone, colons allowed, any case.
func ParsePin(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "sha256:")
	h = strings.ReplaceAll(h, ":", "")
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA pin %q: want sha256: and 64 hex digits", s)
	}
	return "sha256:" + h, nil
}

// ServerName is the host of a proxy address, which the proxy's certificate
// must name.
func ServerName(proxyAddr string) (string, error) {
	host, port, err := net.SplitHostPort(proxyAddr)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("proxy address %q: want HOST:PORT", proxyAddr)
	}
	return host, nil
}

// TLSConfig makes the client's TLS configuration: the proxy must present a
// certificate for serverName with the ServerAuth usage, chaining to one of
// roots (the host CA). cert, when not nil, is presented for mTLS.
func TLSConfig(serverName string, roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	return firstUse(serverName, func(*x509.Certificate) (*x509.CertPool, error) { return roots, nil }, cert)
}

// FirstUseTLSConfig makes the TLS configuration of a first login, when the
// client does not know the host CA yet: the proxy sends the host CA after
// its own certificate; decide sees that CA and returns nil to trust it
// (after checking a pin or asking the user) or an error to refuse. The
// proxy's certificate must then chain to that CA and name serverName, so a
// pinned CA is as strong as a CA file.
func FirstUseTLSConfig(serverName string, decide func(hostCA *x509.Certificate) error, cert *tls.Certificate) *tls.Config {
	return firstUse(serverName, func(ca *x509.Certificate) (*x509.CertPool, error) {
		if ca == nil {
			return nil, errors.New("the proxy sent no CA certificate after its own, so there is nothing to pin; use --ca-file")
		}
		if err := decide(ca); err != nil {
			return nil, err
		}
		p := x509.NewCertPool()
		p.AddCert(ca)
		return p, nil
	}, cert)
}

func firstUse(serverName string, roots func(sentCA *x509.Certificate) (*x509.CertPool, error), cert *tls.Certificate) *tls.Config {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		// Verification happens in VerifyConnection below, with the same
		// rules crypto/tls applies, plus the first-use CA decision.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the proxy presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			var sent *x509.Certificate
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && bytes.Equal(c.RawSubject, c.RawIssuer) && leaf.CheckSignatureFrom(c) == nil {
					sent = c
					break
				}
			}
			pool, err := roots(sent)
			if err != nil {
				return err
			}
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots:     pool,
				DNSName:   serverName,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("the proxy's certificate is not trusted: %w", err)
			}
			return nil
		},
	}
	if cert != nil {
		c := *cert
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return tc
}

// Client calls the API of one proxy.
type Client struct {
	base      string
	hc        *http.Client
	userAgent string
}

// NewClient returns a client of the proxy at proxyAddr (HOST:PORT) using tc.
func NewClient(proxyAddr string, tc *tls.Config, userAgent string) (*Client, error) {
	if _, err := ServerName(proxyAddr); err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		Proxy:               nil, // the proxy address is reached directly
	}
	return &Client{
		base:      "https://" + proxyAddr,
		hc:        &http.Client{Transport: tr, Timeout: 60 * time.Second},
		userAgent: userAgent,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// StatusError is an error answer of the API.
type StatusError struct {
	Status     int
	Message    string
	RetryAfter time.Duration
	// BrowserURL is the page a security key answers at (Error.BrowserURL).
	BrowserURL string
}

func (e *StatusError) Error() string { return e.Message }

// do sends in (nil for none) and decodes the answer into out (nil to
// discard it).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.doHeader(ctx, method, path, in, out)
	return err
}

// doHeader is do that also returns the answer's header.
func (c *Client) doHeader(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", method, strings.TrimPrefix(c.base, "https://"), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if len(data) > MaxBody {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, MaxBody)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if msg == "" {
			msg = resp.Status
		}
		se := &StatusError{Status: resp.StatusCode, Message: msg, BrowserURL: e.BrowserURL}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			se.RetryAfter = time.Duration(s) * time.Second
		}
		return nil, se
	}
	if out == nil {
		return resp.Header, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
	}
	return resp.Header, nil
}

// Login exchanges a password (and, the first time, an invite) for a user
// certificate.
func (c *Client) Login(ctx context.Context, req LoginRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathLogin, req, &out)
}

// Join exchanges a join token for a host certificate.
func (c *Client) Join(ctx context.Context, req JoinRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathJoin, req, &out)
}

// AgentDBClient asks for a db-client certificate; the client must present
// its host certificate (mTLS).
func (c *Client) AgentDBClient(ctx context.Context, req DBClientRequest) (*DBClientCertificate, error) {
	var out DBClientCertificate
	return &out, c.do(ctx, http.MethodPost, PathAgentDBClient, req, &out)
}

// AgentRegister registers the databases an agent serves; the client must
// present its host certificate (mTLS).
func (c *Client) AgentRegister(ctx context.Context, req RegisterRequest) ([]Database, error) {
	var out []Database
	return out, c.do(ctx, http.MethodPost, PathAgentRegister, req, &out)
}

// AgentRenew asks for a fresh host certificate; the client must present its
// current one (mTLS).
func (c *Client) AgentRenew(ctx context.Context, req RenewHostRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathAgentRenew, req, &out)
}

// Reissue asks for a fresh certificate; the client must present its
// current one (mTLS).
func (c *Client) Reissue(ctx context.Context, req ReissueRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathReissue, req, &out)
}

// Whoami returns the identity the broker read from the client certificate.
func (c *Client) Whoami(ctx context.Context) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodGet, PathWhoami, nil, &out)
}

// MyDatabases lists the databases the caller's roles can reach.
func (c *Client) MyDatabases(ctx context.Context) ([]Database, error) {
	dbs, _, err := c.MyDatabasesWhy(ctx)
	return dbs, err
}

// MyDatabasesWhy is MyDatabases with, when the list is empty, the reason
// the broker gives (EmptyNoneRegistered, EmptyNoneAllowed, EmptyNoneLive;
// "" from a broker that gives none).
func (c *Client) MyDatabasesWhy(ctx context.Context) ([]Database, string, error) {
	var out []Database
	h, err := c.doHeader(ctx, http.MethodGet, PathDatabases, nil, &out)
	if err != nil {
		return nil, "", err
	}
	return out, h.Get(HeaderEmptyReason), nil
}

// AddUser creates a user and returns the invite.
func (c *Client) AddUser(ctx context.Context, req AddUserRequest) (*AddUserResponse, error) {
	var out AddUserResponse
	return &out, c.do(ctx, http.MethodPost, PathAdminUsers, req, &out)
}

// Users lists the users.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var out []User
	return out, c.do(ctx, http.MethodGet, PathAdminUsers, nil, &out)
}

// RemoveUser deletes a user.
func (c *Client) RemoveUser(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, PathAdminUsers+"/"+url.PathEscape(name), nil, nil)
}

// ResetMFA removes every second factor of a user.
func (c *Client) ResetMFA(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPost, PathAdminUsers+"/"+url.PathEscape(name)+"/reset-mfa", struct{}{}, nil)
}

// UpsertRoles creates or replaces the roles of a YAML text.
func (c *Client) UpsertRoles(ctx context.Context, yaml string) ([]RoleResult, error) {
	var out []RoleResult
	return out, c.do(ctx, http.MethodPost, PathAdminRoles, RolesRequest{YAML: yaml}, &out)
}

// Roles lists built-in and stored roles.
func (c *Client) Roles(ctx context.Context) ([]Role, error) {
	var out []Role
	return out, c.do(ctx, http.MethodGet, PathAdminRoles, nil, &out)
}

// AddToken creates a join token.
func (c *Client) AddToken(ctx context.Context, req AddTokenRequest) (*AddTokenResponse, error) {
	var out AddTokenResponse
	return &out, c.do(ctx, http.MethodPost, PathAdminTokens, req, &out)
}

// Tokens lists the join tokens.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out []Token
	return out, c.do(ctx, http.MethodGet, PathAdminTokens, nil, &out)
}

// Databases lists every registered database.
func (c *Client) Databases(ctx context.Context) ([]Database, error) {
	var out []Database
	return out, c.do(ctx, http.MethodGet, PathAdminDatabases, nil, &out)
}

// SignIdentity signs a user certificate for an identity file.
func (c *Client) SignIdentity(ctx context.Context, req SignIdentityRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathAdminSignID, req, &out)
}

// SignDB signs a database server certificate.
func (c *Client) SignDB(ctx context.Context, req SignDBRequest) (*SignDBResponse, error) {
	var out SignDBResponse
	return &out, c.do(ctx, http.MethodPost, PathAdminSignDB, req, &out)
}

// UpsertConnectors adds or replaces the connectors of a YAML text.
func (c *Client) UpsertConnectors(ctx context.Context, yaml string) ([]ConnectorResult, error) {
	var out []ConnectorResult
	return out, c.do(ctx, http.MethodPost, PathAdminSSO, ConnectorsRequest{YAML: yaml}, &out)
}

// Connectors lists the single sign-on connectors.
func (c *Client) Connectors(ctx context.Context) ([]Connector, error) {
	var out []Connector
	return out, c.do(ctx, http.MethodGet, PathAdminSSO, nil, &out)
}

// RemoveConnector removes a connector.
func (c *Client) RemoveConnector(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, PathAdminSSO+"/"+url.PathEscape(name), nil, nil)
}

// BeginTOTP asks for a new TOTP secret for the caller (mTLS).
func (c *Client) BeginTOTP(ctx context.Context) (*TOTPEnrollment, error) {
	var out TOTPEnrollment
	return &out, c.do(ctx, http.MethodPost, PathMFATOTP, struct{}{}, &out)
}

// ConfirmTOTP enrolls the secret BeginTOTP gave with one of its codes.
func (c *Client) ConfirmTOTP(ctx context.Context, code string) error {
	return c.do(ctx, http.MethodPost, PathMFATOTPConfirm, TOTPConfirmRequest{Code: code}, nil)
}

// Factors lists the caller's second factors.
func (c *Client) Factors(ctx context.Context) ([]Factor, error) {
	var out []Factor
	return out, c.do(ctx, http.MethodGet, PathMFA, nil, &out)
}

// SessionCert asks for a certificate for one database session.
func (c *Client) SessionCert(ctx context.Context, req SessionCertRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathMFASession, req, &out)
}

// RemoveFactor removes a second factor of the caller.
func (c *Client) RemoveFactor(ctx context.Context, req RemoveFactorRequest) error {
	return c.do(ctx, http.MethodPost, PathMFARemove, req, nil)
}

// PasskeyLogin starts a sign-in with a passkey in the browser.
func (c *Client) PasskeyLogin(ctx context.Context, req PasskeyLoginRequest) (*BrowserResponse, error) {
	var out BrowserResponse
	return &out, c.do(ctx, http.MethodPost, PathLoginPasskey, req, &out)
}

// RegisterKey starts registering a security key in the browser.
func (c *Client) RegisterKey(ctx context.Context, req BrowserRequest) (*BrowserResponse, error) {
	var out BrowserResponse
	return &out, c.do(ctx, http.MethodPost, PathMFAWebAuthn, req, &out)
}

// SSOLogin starts a single sign-on for tg.
func (c *Client) SSOLogin(ctx context.Context, req SSOLoginRequest) (*SSOLoginResponse, error) {
	var out SSOLoginResponse
	return &out, c.do(ctx, http.MethodPost, PathSSOLogin, req, &out)
}

var _ Admin = (*Client)(nil)
