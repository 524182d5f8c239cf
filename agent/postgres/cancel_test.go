package postgres

import (
	"bytes"
	"testing"
)

// Two backends on different databases may have the same process id; each
// session's cancel key still names only its own.
func TestCancelKeysSamePID(t *testing.T) {
	var k cancelKeys
	a := &cancelTarget{addr: "db-a:5432", pid: 4242, secret: []byte{1, 2, 3, 4}}
	b := &cancelTarget{addr: "db-b:5432", pid: 4242, secret: []byte{1, 2, 3, 4}}
	ka, kb := k.add(a), k.add(b)
	if bytes.Equal(ka, kb) {
		t.Fatal("two sessions were given the same secret")
	}
	if len(ka) != 4 || len(kb) != 4 {
		t.Fatalf("secret lengths %d %d, want the database's 4", len(ka), len(kb))
	}
	if k.get(4242, ka) != a || k.get(4242, kb) != b {
		t.Fatal("a secret found the wrong session")
	}
	if k.get(4243, ka) != nil || k.get(4242, a.secret) != nil {
		t.Fatal("a wrong process id or the database's own secret found a session")
	}
	k.remove(ka)
	if k.get(4242, ka) != nil || k.get(4242, kb) != b {
		t.Fatal("remove")
	}
	// Protocol 3.2 lets the database choose a longer secret; the client
	// gets one as long.
	long := &cancelTarget{pid: 7, secret: bytes.Repeat([]byte{9}, 32)}
	if kl := k.add(long); len(kl) != 32 || k.get(7, kl) != long {
		t.Fatalf("long secret %x", kl)
	}
}
