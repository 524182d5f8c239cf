package webui

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// SessionBucket is the key-value bucket of web sessions. Every broker of
// a cluster reads it, so a browser signed in through one broker is
// signed in on all of them, and after a restart.
//
// A record holds what a page needs to authenticate the browser again:
// the user and the certificate the sign-in issued, with its expiry. It
// holds nothing that lets anyone act as the user: the key is the SHA-256
// of the cookie's random handle (the handle itself is only in the
// browser), and the certificate's private key is never kept, because the
// certificate is only ever checked by the broker itself
// (login.Service.Authenticate) and never presented to an agent. So the
// bucket is no secret store and needs no encryption. Writing it is
// another matter: a record planted with any certificate of a user (a
// public thing) would make a cookie for that user. Only the broker's NATS
// identity may write it (events/natsserver), and that identity can
// already change users and roles in STATE, so a planted record grants
// nothing its writer did not hold; the page still accepts only a
// certificate the user CA issued and the API accepts now.
const SessionBucket = "WEB_SESSIONS"

// markerTTL is how long the bucket keeps the marker of a session that
// expired or was signed out; readers only need to see it while they
// catch up.
const markerTTL = time.Minute

// EnsureSessions binds WEB_SESSIONS, creating it when it does not exist,
// with per-key TTLs so a record goes when its certificate expires.
func EnsureSessions(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, SessionBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      SessionBucket,
			Description: "Web UI sign-ins: SHA-256 of the cookie's handle to the user's certificate (webui)",
			History:     1,
			// File storage: a session outlives a restart of NATS too.
			Storage:        jetstream.FileStorage,
			Replicas:       max(replicas, 1),
			LimitMarkerTTL: markerTTL,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, SessionBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("webui: key-value bucket %s: %w", SessionBucket, err)
	}
	return kv, nil
}

// sessionRecord is one web session in WEB_SESSIONS.
type sessionRecord struct {
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	// Expires is the certificate's NotAfter: the session ends with it.
	Expires time.Time `json:"expires"`
	// Cert is the certificate's DER.
	Cert []byte `json:"cert"`
}

// errStore says the bucket could not be read or written: the page
// answers 503 rather than sending the browser to sign in again.
var errStore = errors.New("web sessions unavailable")

// sessionKey is the record's key for a cookie handle: its SHA-256 in hex,
// so whoever reads the bucket learns no handle a browser holds.
func sessionKey(handle string) string {
	h := sha256.Sum256([]byte(handle))
	return hex.EncodeToString(h[:])
}

// csrfToken is the token a session's forms carry: derived from the
// handle, so every broker computes the same one and the bucket holds
// none; without the handle (an HttpOnly cookie) it cannot be computed.
func csrfToken(handle string) string {
	m := hmac.New(sha256.New, []byte(handle))
	m.Write([]byte("tollgate web ui csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validHandle says whether a cookie value has the form randomToken
// makes, so a forged value never reaches the bucket.
func validHandle(h string) bool {
	b, err := base64.RawURLEncoding.DecodeString(h)
	return err == nil && len(b) == 32
}

// putSession stores a new session for cert under handle, its key living
// until the certificate expires.
func (u *UI) putSession(ctx context.Context, handle string, cert *x509.Certificate) error {
	id, err := identity.FromCertificate(cert)
	if err != nil {
		return err
	}
	now := u.o.Now()
	rec := sessionRecord{User: id.User, Created: now.UTC(), Expires: cert.NotAfter.UTC(), Cert: cert.Raw}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// The bucket's TTLs count whole seconds: round up, so the record is
	// never gone before the certificate is.
	ttl := cert.NotAfter.Sub(now).Truncate(time.Second) + time.Second
	if _, err := u.o.Sessions.Create(ctx, sessionKey(handle), b, jetstream.KeyTTL(ttl)); err != nil {
		return fmt.Errorf("%w: store the session in %s: %v", errStore, SessionBucket, err)
	}
	return nil
}

// getSession reads the session of handle; errNoSession when there is
// none.
func (u *UI) getSession(ctx context.Context, handle string) (*sessionRecord, *x509.Certificate, error) {
	if !validHandle(handle) {
		return nil, nil, errNoSession
	}
	e, err := u.o.Sessions.Get(ctx, sessionKey(handle))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil, errNoSession
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read %s: %v", errStore, SessionBucket, err)
	}
	var rec sessionRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, nil, fmt.Errorf("web session record: %w", err)
	}
	cert, err := x509.ParseCertificate(rec.Cert)
	if err != nil {
		return nil, nil, fmt.Errorf("web session certificate: %w", err)
	}
	return &rec, cert, nil
}

// dropSession deletes the session of handle at once, so the cookie is
// refused by every broker from now on.
func (u *UI) dropSession(ctx context.Context, handle string) error {
	if !validHandle(handle) {
		return nil
	}
	if err := u.o.Sessions.Purge(ctx, sessionKey(handle), jetstream.PurgeTTL(markerTTL)); err != nil {
		return fmt.Errorf("%w: delete the session from %s: %v", errStore, SessionBucket, err)
	}
	return nil
}
