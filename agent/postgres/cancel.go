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

// cancelKey is the process id and secret the agent gave a client in its
// BackendKeyData.
type cancelKey [8]byte

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

// cancelKeys maps the keys the agent issued to their targets. Clients never
// see a database's real key, so a cancel request must come through the
// agent, which audits it.
type cancelKeys struct {
	mu sync.Mutex
	m  map[cancelKey]*cancelTarget
}

func (k *cancelKeys) add(t *cancelTarget) cancelKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[cancelKey]*cancelTarget{}
	}
	for {
		var key cancelKey
		_, _ = rand.Read(key[:])
		key[0] &= 0x7f // a positive process id, as clients expect
		if _, taken := k.m[key]; !taken && binary.BigEndian.Uint32(key[:4]) != 0 {
			k.m[key] = t
			return key
		}
	}
}

func (k *cancelKeys) get(key cancelKey) *cancelTarget {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[key]
}

func (k *cancelKeys) remove(key cancelKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, key)
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
