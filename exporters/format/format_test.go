package format_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/exporters/ocsfcheck"
	"github.com/tollgate-db/tollgate/schemas"
)

func query() *events.Query {
	q := &events.Query{
		Session:    events.Session{SID: "01HSESSION", EI: 7},
		Database:   events.Database{Service: "pg-main", Protocol: "postgres", URI: "10.1.2.3:5432", User: "app", Name: "orders"},
		Query:      "SELECT * FROM orders WHERE id = $1",
		Parameters: []string{"42"},
	}
	q.Envelope.User = "alice"
	q.Roles = []string{"access"}
	if err := events.Stamp(q, "prod"); err != nil {
		panic(err)
	}
	return q
}

func TestScan(t *testing.T) {
	q := query()
	b, _ := json.Marshal(q)
	env, err := format.Scan(b)
	if err != nil {
		t.Fatal(err)
	}
	want := format.Envelope{ID: q.ID, Type: "db.session.query", Code: "TGDB002I", Time: q.Time, Cluster: "prod", User: "alice",
		SID: "01HSESSION", DBService: "pg-main", DBName: "orders", DBUser: "app"}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("got %+v\nwant %+v", env, want)
	}
	if env.Severity() != 'I' {
		t.Fatalf("severity %c", env.Severity())
	}
	// Escapes in keys and values, nesting, a duplicate key (the last wins).
	env, err = format.Scan([]byte(` {"\u0069d":"a\"b","type":"x.y","time":"2024-01-02T03:04:05.5Z","user":"first","nested":{"user":"no"},"list":[1,-2.5e3,true,null,"s"],"user":"\u00e9ve"} `))
	if err != nil {
		t.Fatal(err)
	}
	if env.ID != `a"b` || env.User != "éve" || !env.Time.Equal(time.Date(2024, 1, 2, 3, 4, 5, 5e8, time.UTC)) {
		t.Fatalf("%+v", env)
	}
	for _, bad := range []string{
		``, `[]`, `{`, `{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z"`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z"}x`,
		`{"id":"a","type":"x.y","time":"yesterday"}`,
		`{"id":"a","type":"x.y"}`, `{"type":"x.y","time":"2024-01-02T03:04:05Z"}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","n":01}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","s":"tab	in"}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","s":"\x"}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","a":[1,]}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z",}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","t":tru}`,
		`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","d":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	} {
		if _, err := format.Scan([]byte(bad)); err == nil {
			t.Errorf("Scan(%q) accepted it", bad)
		}
	}
}

// FuzzScan compares Scan with encoding/json: it accepts exactly the JSON
// objects encoding/json accepts (within its nesting limit), and the fields
// it reads are those encoding/json reads.
func FuzzScan(f *testing.F) {
	b, _ := json.Marshal(query())
	f.Add(b)
	f.Add([]byte(`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","user":"\u00e9"}`))
	f.Add([]byte(`{"id":"a","id":1,"type":"x.y","time":"2024-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"id":"a","type":"x.y","time":"2024-01-02T03:04:05Z","x":[{"y":[-0.5e+7]}]}`))
	f.Add([]byte(`{"id":"\ud800","type":"x.y","time":"2024-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := format.Scan(b)
		var m map[string]any
		jerr := json.Unmarshal(b, &m)
		deep := bytes.Count(b, []byte("["))+bytes.Count(b, []byte("{")) > 60
		if jerr != nil && err == nil {
			t.Fatalf("Scan accepted what encoding/json refuses (%v): %q", jerr, b)
		}
		if jerr == nil && err != nil && !deep && strings.Contains(err.Error(), "malformed JSON") {
			t.Fatalf("Scan refused valid JSON: %v: %q", err, b)
		}
		if err != nil {
			return
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		got := []string{env.ID, env.Type, env.Code, env.Cluster, env.User, env.SID, env.DBService, env.DBName, env.DBUser}
		want := []string{str("id"), str("type"), str("code"), str("cluster"), str("user"), str("sid"), str("db_service"), str("db_name"), str("db_user")}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Scan read %q, encoding/json %q from %q", got, want, b)
		}
	})
}

func TestCloudEvents(t *testing.T) {
	q := query()
	b, _ := json.Marshal(q)
	env, _ := format.Scan(b)
	f, err := format.New("cloudevents", format.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Append(nil, &env, b)
	if err != nil {
		t.Fatal(err)
	}
	var ce map[string]json.RawMessage
	if err := json.Unmarshal(out, &ce); err != nil {
		t.Fatalf("not JSON: %v: %s", err, out)
	}
	str := func(k string) string { var s string; _ = json.Unmarshal(ce[k], &s); return s }
	if str("specversion") != "1.0" || str("id") != q.ID || str("source") != "/tollgate/prod" || str("type") != "tollgate.db.session.query" ||
		str("subject") != "01HSESSION" || str("datacontenttype") != "application/json" || str("tollgatecode") != "TGDB002I" ||
		str("dataschema") != "https://github.com/tollgate-db/tollgate/schemas/db.session.query.json" {
		t.Fatalf("attributes: %s", out)
	}
	if tm, err := time.Parse(time.RFC3339Nano, str("time")); err != nil || !tm.Equal(q.Time) {
		t.Fatalf("time %q", str("time"))
	}
	if !bytes.Equal(ce["data"], b) {
		t.Fatalf("data is not the event")
	}
	if err := schemas.Validate(ce["data"]); err != nil {
		t.Fatal(err)
	}
	// Extension names: lower-case letters and digits, at most 20.
	for k := range ce {
		for _, r := range k {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
				t.Fatalf("attribute name %q is not a valid CloudEvents name", k)
			}
		}
	}
}

type requests map[string]format.AccessRequest

func (r requests) AccessRequest(_ context.Context, id string) (format.AccessRequest, bool, error) {
	a, ok := r[id]
	return a, ok, nil
}

// sample returns an event of type typ with the fields the mapping reads.
func sample(t *testing.T, s events.Spec) events.Event {
	ev := s.New()
	b, _ := json.Marshal(map[string]any{
		"sid": "S1", "ei": 3, "db_service": "pg", "db_protocol": "postgres", "db_uri": "db.example:5432", "db_user": "app", "db_name": "orders",
		"db_query": "UPDATE t SET x = 1", "client_addr": "192.0.2.1:4000", "source_addr": "198.51.100.2", "method": "password",
		"name": "bob", "user_roles": []string{"access"}, "request_id": "R1", "state": "approved", "success": true, "db_command_tag": "UPDATE 1",
		"db_duration_ns": 3000000, "reason": "client closed",
	})
	if err := json.Unmarshal(b, ev); err != nil {
		t.Fatal(err)
	}
	ev.Header().User = "alice"
	ev.Header().Roles = []string{"access"}
	if err := events.Stamp(ev, "prod"); err != nil {
		t.Fatal(err)
	}
	return ev
}

// Every registered event type maps to an OCSF event that has every
// attribute its class requires.
func TestOCSFEveryType(t *testing.T) {
	f, _ := format.New("ocsf", format.Options{Requests: requests{"R1": {Requester: "carol", Roles: []string{"dba"}}}, ProductVersion: "1.2.3"})
	want := map[string]int{
		"db.session.query": 6005, "db.session.result": 6005, "db.session.postgres.execute": 6005,
		"db.session.start": 3003, "db.session.end": 3002, "user.login": 3002,
		"access_request.update": 3007, "user.create": 3007, "cert.issue": 0,
		"db.session.rejected": 3002, "role.update": 0,
	}
	for _, s := range events.Specs() {
		ev := sample(t, s)
		b, _ := json.Marshal(ev)
		env, err := format.Scan(b)
		if err != nil {
			t.Fatalf("%s: %v", s.Type, err)
		}
		out, err := f.Append(nil, &env, b)
		if err != nil {
			t.Fatalf("%s: %v", s.Type, err)
		}
		if err := ocsfcheck.Check(out); err != nil {
			t.Fatalf("%s: %v\n%s", s.Type, err, out)
		}
		var o struct {
			Class    int `json:"class_uid"`
			Activity int `json:"activity_id"`
			User     struct{ Name string }
			Metadata struct {
				UID     string `json:"uid"`
				Product struct{ Version string }
			}
			Unmapped struct {
				Tollgate      json.RawMessage
				TollgateEvent *string `json:"tollgate_event"`
			}
		}
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatal(err)
		}
		if o.Unmapped.TollgateEvent == nil || *o.Unmapped.TollgateEvent != string(b) {
			t.Errorf("%s: unmapped.tollgate_event is not the event's bytes", s.Type)
		}
		if c, ok := want[s.Type]; ok && o.Class != c {
			t.Errorf("%s: class %d, want %d", s.Type, o.Class, c)
		}
		if o.Metadata.UID != ev.Header().ID || o.Metadata.Product.Version != "1.2.3" {
			t.Errorf("%s: metadata %+v", s.Type, o.Metadata)
		}
		var orig, kept map[string]any
		_ = json.Unmarshal(b, &orig)
		_ = json.Unmarshal(o.Unmapped.Tollgate, &kept)
		if !reflect.DeepEqual(orig, kept) {
			t.Errorf("%s: unmapped.tollgate is not the event", s.Type)
		}
		switch s.Type {
		case "access_request.update":
			if o.Activity != 16 || o.User.Name != "carol" {
				t.Errorf("approval: activity %d user %q, want 16 (Assign Roles) to carol", o.Activity, o.User.Name)
			}
		case "db.session.rejected":
			if o.Activity != 1 || o.User.Name != "unknown" {
				t.Errorf("refusal: activity %d user %q, want 1 (Logon) by unknown", o.Activity, o.User.Name)
			}
		case "db.session.query":
			if o.Activity != 2 {
				t.Errorf("UPDATE statement: activity %d, want 2 (Update)", o.Activity)
			}
		}
	}
}

func BenchmarkScan(b *testing.B) {
	ev, _ := json.Marshal(query())
	b.ReportAllocs()
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		if _, err := format.Scan(ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func benchFormat(b *testing.B, name string) {
	ev, _ := json.Marshal(query())
	env, _ := format.Scan(ev)
	f, _ := format.New(name, format.Options{})
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = f.Append(dst[:0], &env, ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkCloudEvents(b *testing.B) { benchFormat(b, "cloudevents") }
func BenchmarkOCSF(b *testing.B)        { benchFormat(b, "ocsf") }

// A lock on a user is User Management: Lock, naming the locked user and
// who placed it.
func TestOCSFLockOnUser(t *testing.T) {
	f, _ := format.New("ocsf", format.Options{})
	ev := &events.LockCreate{LockID: "L1", TargetUser: "bob", Message: "incident"}
	ev.User, ev.Roles = "alice", []string{"editor"}
	if err := events.Stamp(ev, "prod"); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ev)
	env, _ := format.Scan(b)
	out, err := f.Append(nil, &env, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := ocsfcheck.Check(out); err != nil {
		t.Fatal(err)
	}
	var o struct {
		Class    int `json:"class_uid"`
		Activity int `json:"activity_id"`
		User     struct{ Name string }
		Actor    struct{ User struct{ Name string } }
	}
	_ = json.Unmarshal(out, &o)
	if o.Class != 3007 || o.Activity != 6 || o.User.Name != "bob" || o.Actor.User.Name != "alice" {
		t.Errorf("lock on a user: %s", out)
	}
}
