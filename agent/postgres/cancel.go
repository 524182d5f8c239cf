package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/agent"
)

// Secret key lengths: protocol 3.0 has 4 bytes; 3.2 lets the server choose
// up to 256.
const (
	minSecretKey = 4
	maxSecretKey = 256
)

// cancelTarget is where a cancel request with a key goes: the session it
// belongs to and the database backend's real key.
type cancelTarget struct {
	sess   *agent.Session
	user   string
	addr   string
	tls    *tls.Config
	pid    uint32
	secret []byte
}

// cancelKeys maps the secret keys the agent issued to their targets.
// Clients are told their backend's real process id but never its secret,
// so a cancel request must come through the agent, which audits it. The
// agent's secret alone names a session: two backends on different
// databases may share a process id.
type cancelKeys struct {
	mu sync.Mutex
	m  map[string]*cancelTarget
}

// add issues a secret as long as the database's own, so the client gets
// the length its protocol version allows.
func (k *cancelKeys) add(t *cancelTarget) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]*cancelTarget{}
	}
	n := max(len(t.secret), minSecretKey)
	for {
		key := make([]byte, n)
		_, _ = rand.Read(key)
		if _, taken := k.m[string(key)]; !taken {
			k.m[string(key)] = t
			return key
		}
	}
}

// get returns the target of a cancel request, or nil when the secret is
// unknown or was issued with another process id.
func (k *cancelKeys) get(pid uint32, secret []byte) *cancelTarget {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.m[string(secret)]
	if t == nil || t.pid != pid {
		return nil
	}
	return t
}

func (k *cancelKeys) remove(secret []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, string(secret))
}

// send forwards a cancel request with the backend's real key over a new
// TLS connection to the database, and waits until the server read it.
func (t *cancelTarget) send(ctx context.Context, timeout time.Duration) error {
	up, err := dialTLS(ctx, t.addr, t.tls, timeout)
	if err != nil {
		return fmt.Errorf("forwarding cancel: %w", err)
	}
	defer up.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = up.SetDeadline(d)
	} else {
		_ = up.SetDeadline(time.Now().Add(timeout))
	}
	msg := make([]byte, 12, 12+len(t.secret))
	binary.BigEndian.PutUint32(msg[0:], uint32(12+len(t.secret)))
	binary.BigEndian.PutUint32(msg[4:], codeCancel)
	binary.BigEndian.PutUint32(msg[8:], t.pid)
	msg = append(msg, t.secret...)
	if _, err := up.Write(msg); err != nil {
		return fmt.Errorf("forwarding cancel: %w", err)
	}
	// The server closes the connection once it has read the request;
	// waiting for that keeps the cancel ahead of anything sent next.
	_, _ = io.Copy(io.Discard, up)
	return nil
}
