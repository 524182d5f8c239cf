package state

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

var stateTypes = []string{"user.create", "user.update", "user.delete", "user.password_set", "role.create", "role.update",
	"role.delete", "token.create", "token.use", "db.create", "db.delete", "ca.publish", "access_request.create",
	"access_request.update", "lock.create", "lock.delete"}

// seedEvents is one encoded event of every STATE type, with the values that
// exercise the scanner: escapes, non-ASCII, empty and nil lists, zero and
// set times.
func seedEvents(tb testing.TB) [][]byte {
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 890123456, time.UTC)
	evs := []events.Event{
		&events.UserCreate{Name: "alice@example.com", UserRoles: []string{"access", "dev"},
			Traits: map[string][]string{"db_users": {"alice", "*"}, "db_names": {}}, InviteExpires: t0},
		&events.UserCreate{Name: "zoë \"quoted\" <b>&\u2028", UserRoles: nil},
		&events.UserUpdate{Name: "bob", UserRoles: []string{}, LockedUntil: t0, LockReason: "tab\there\nnewline \\ slash/"},
		&events.UserDelete{Name: "bob"},
		&events.UserPasswordSet{Name: "bob", InviteUsed: true},
		&events.RoleCreate{Name: "dev"},
		&events.RoleDelete{Name: "dev"},
		&events.TokenCreate{TokenID: TokenID("x"), TokenType: TokenDB, Expires: t0, SingleUse: true},
		&events.TokenUse{Status: events.Status{Success: false, Error: "expired"}, TokenID: TokenID("x"), HostID: "h"},
		&events.DBCreate{Service: "pg1", Protocol: "postgres", URI: "127.0.0.1:5432", Labels: map[string]string{"env": "prod", "日本": "東京"},
			HostID: "h", HeartbeatTTLNs: -90_000_000_000},
		&events.DBDelete{Service: "pg1"},
		&events.CAPublish{CAType: "db-client", CertPEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", Fingerprints: []string{"ab"}},
		&events.AccessRequestCreate{RequestID: "01J", Requester: "bob", RequestRoles: []string{"access"}, Reason: "incident", Expires: t0},
		&events.AccessRequestUpdate{RequestID: "01J", State: "approved"},
		&events.LockCreate{LockID: "01K", TargetRole: "dev", Message: "m", Expires: t0.In(time.FixedZone("x", 3600))},
		&events.LockDelete{LockID: "01K"},
	}
	var out [][]byte
	for _, ev := range evs {
		h := ev.Header()
		h.User, h.Roles, h.Time = "admin", []string{"editor", "access"}, t0
		if err := events.Stamp(ev, "c1"); err != nil {
			tb.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkFast decodes data with the fast path as type typ and, if it
// accepted the input, checks that encoding/json accepts it too and gives
// the same event.
func checkFast(t *testing.T, typ string, data []byte) bool {
	fast := newEvent(typ)
	if decodeFast(data, fast, newInterner()) != nil {
		return false
	}
	ref := newEvent(typ)
	if err := json.Unmarshal(data, ref); err != nil {
		t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", err, data)
	}
	if !reflect.DeepEqual(fast, ref) {
		t.Fatalf("fast path and encoding/json differ on %q:\nfast %#v\njson %#v", data, fast, ref)
	}
	return true
}

func TestFastDecodeMatchesEncodingJSON(t *testing.T) {
	seeds := seedEvents(t)
	fast := 0
	for _, b := range seeds {
		typ, err := typeOf(b)
		if err != nil {
			t.Fatal(err)
		}
		if checkFast(t, typ, b) {
			fast++
		} else if typ != "role.create" && typ != "role.delete" {
			t.Errorf("%s did not take the fast path: %s", typ, b)
		}
		// Whatever path it takes, decode gives encoding/json's answer.
		ev, err := decode(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		ref := newEvent(typ)
		_ = json.Unmarshal(b, ref)
		if !reflect.DeepEqual(ev, ref) {
			t.Fatalf("decode differs from encoding/json on %s", b)
		}
	}
	if fast < len(seeds)-2 {
		t.Fatalf("only %d of %d seeds on the fast path", fast, len(seeds))
	}
	// Forms the fast path leaves to encoding/json, which must still work.
	for _, b := range []string{
		`{"id":"1","type":"user.delete","NAME":"x"}`,
		`{"id":"1","type":"user.delete","name":"x","extra":[1,{"a":null}]}`,
		`{"id":"1","type":"user.delete","name":"\ud83d\ude00"}`,
		`{"id":"1","type":"user.delete","name":null}`,
		"{\"id\":\"1\",\"type\":\"user.delete\",\"name\":\"\xff\"}",
		`{"id":"1","type":"db.create","heartbeat_ttl_ns":1e3}`,
		`{"id":"1","type":"db.create","heartbeat_ttl_ns":01}`,
		`{"id":"1","type":"db.create","heartbeat_ttl_ns":-01}`,
		`{"id":"1","type":"db.create","heartbeat_ttl_ns":99999999999999999999}`,
	} {
		if decodeFast([]byte(b), newEvent("user.delete"), newInterner()) == nil && decodeFast([]byte(b), newEvent("db.create"), newInterner()) == nil {
			t.Errorf("fast path took %s", b)
		}
		ev, err := decode([]byte(b), nil)
		ref := newEvent(must(typeOf([]byte(b))))
		rerr := json.Unmarshal([]byte(b), ref)
		if (err == nil) != (rerr == nil) || err == nil && !reflect.DeepEqual(ev, ref) {
			t.Errorf("%s: decode %v %#v, encoding/json %v %#v", b, err, ev, rerr, ref)
		}
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// FuzzDecode checks that the fast decoder never disagrees with
// encoding/json: whatever it accepts, encoding/json decodes to the same
// event.
func FuzzDecode(f *testing.F) {
	for i, b := range seedEvents(f) {
		f.Add(uint8(i), b)
	}
	f.Add(uint8(0), []byte(`{"id":"1","type":"user.create","name":"a\u00e9\/b","user_roles":[ "x" , "y" ],"traits":{"k":[]}}`))
	f.Add(uint8(9), []byte(`{"db_labels":{"a":"b","a":"c"},"db_labels":{"d":"e"},"heartbeat_ttl_ns":-0}`))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		checkFast(t, stateTypes[int(which)%len(stateTypes)], data)
		_, _ = decode(data, nil) // never panics
	})
}
