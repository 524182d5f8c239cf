package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/schemas/internal/generate"
)

// TestCheckedInUpToDate regenerates every schema in memory and compares it
// with the files in this directory, so a changed event type cannot land
// without its schema.
func TestCheckedInUpToDate(t *testing.T) {
	want, err := generate.Files(events.Specs())
	if err != nil {
		t.Fatalf("generating schemas: %v", err)
	}
	onDisk, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	for _, name := range onDisk {
		if _, ok := want[name]; !ok {
			problems = append(problems, name+" is stale: no registered event type produces it")
		}
	}
	for name, b := range want {
		got, err := os.ReadFile(name)
		switch {
		case errors.Is(err, os.ErrNotExist):
			problems = append(problems, name+" is missing")
		case err != nil:
			t.Fatal(err)
		case !bytes.Equal(got, b):
			problems = append(problems, name+" differs from the event types in events/")
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		t.Fatalf("schemas are out of date, run make generate:\n  %s", strings.Join(problems, "\n  "))
	}
}

// TestGenerationDeterministic guards the byte-for-byte comparison above:
// two runs over the same registry must agree.
func TestGenerationDeterministic(t *testing.T) {
	a, err := generate.Files(events.Specs())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := generate.Files(events.Specs())
	if len(a) != len(b) {
		t.Fatalf("%d files then %d", len(a), len(b))
	}
	for name := range a {
		if !bytes.Equal(a[name], b[name]) {
			t.Fatalf("%s differs between two runs", name)
		}
		if !bytes.HasSuffix(a[name], []byte("}\n")) {
			t.Fatalf("%s does not end in a newline", name)
		}
	}
}

// TestSchemaShape checks the promises every schema makes to consumers.
func TestSchemaShape(t *testing.T) {
	specs := events.Specs()
	if len(specs) == 0 {
		t.Fatal("no event types registered")
	}
	if got := Types(); len(got) != len(specs) {
		t.Fatalf("%d checked-in schemas, %d registered types: run make generate", len(got), len(specs))
	}
	for _, s := range specs {
		raw, ok := Schema(s.Type)
		if !ok {
			t.Fatalf("%s has no checked-in schema: run make generate", s.Type)
		}
		var doc struct {
			Schema     string         `json:"$schema"`
			ID         string         `json:"$id"`
			Title      string         `json:"title"`
			Desc       string         `json:"description"`
			Additional *bool          `json:"additionalProperties"`
			Pattern    map[string]any `json:"patternProperties"`
			Required   []string       `json:"required"`
			Props      map[string]struct {
				Const  string   `json:"const"`
				Enum   []string `json:"enum"`
				Format string   `json:"format"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", s.Type, err)
		}
		codes := []string{s.Code}
		if s.FailCode != "" {
			codes = append(codes, s.FailCode)
		}
		switch {
		case doc.Schema != "https://json-schema.org/draft/2020-12/schema":
			t.Errorf("%s: $schema %q", s.Type, doc.Schema)
		case doc.ID != generate.BaseID+s.Type+".json":
			t.Errorf("%s: $id %q", s.Type, doc.ID)
		case doc.Title != s.Type || doc.Desc != s.Doc:
			t.Errorf("%s: title %q description %q", s.Type, doc.Title, doc.Desc)
		case doc.Additional == nil || *doc.Additional:
			t.Errorf("%s: additionalProperties is not false", s.Type)
		case doc.Pattern[generate.TruncatedPattern] == nil:
			t.Errorf("%s: no patternProperties for truncation flags", s.Type)
		case doc.Props["type"].Const != s.Type:
			t.Errorf("%s: type const %q", s.Type, doc.Props["type"].Const)
		case !slices.Equal(doc.Props["code"].Enum, codes):
			t.Errorf("%s: code enum %v, want %v", s.Type, doc.Props["code"].Enum, codes)
		case doc.Props["time"].Format != "date-time":
			t.Errorf("%s: time format %q", s.Type, doc.Props["time"].Format)
		}
		for _, f := range []string{"id", "type", "code", "time", "cluster"} {
			if !slices.Contains(doc.Required, f) {
				t.Errorf("%s: %s is not required", s.Type, f)
			}
		}
	}
}

// fill returns the zero value of s, stamped, encoded, with every required
// field that has a closed set of values set to the first one allowed.
func fill(t *testing.T, s events.Spec) []byte {
	t.Helper()
	ev := s.New()
	if err := events.Stamp(ev, "c1"); err != nil {
		t.Fatalf("%s: stamping: %v", s.Type, err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	raw, ok := Schema(s.Type)
	if !ok {
		t.Fatalf("%s has no checked-in schema: run make generate", s.Type)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	fillEnums(obj, doc)
	out, _ := json.Marshal(obj)
	return out
}

// fillEnums replaces, at every depth of obj, a value its schema does not
// allow by the schema's first enum value: a zero value carries "" where an
// enum (such as a role's kind) wants a word.
func fillEnums(obj map[string]any, schema map[string]any) {
	props, _ := schema["properties"].(map[string]any)
	for name, ps := range props {
		p, _ := ps.(map[string]any)
		v, present := obj[name]
		if !present || p == nil {
			continue
		}
		if enum, _ := p["enum"].([]any); len(enum) > 0 && !slices.Contains(enum, v) {
			obj[name] = enum[0]
		}
		if child, ok := v.(map[string]any); ok {
			fillEnums(child, p)
		}
	}
}

func TestEveryRegisteredTypeValidates(t *testing.T) {
	for _, s := range events.Specs() {
		if err := Validate(fill(t, s)); err != nil {
			t.Errorf("%s: zero value, stamped: %v", s.Type, err)
		}
	}
}

func query() *events.Query {
	return &events.Query{
		Envelope: events.Envelope{
			ID: "01J9Z8Q6V1K3W4X5Y6Z7A8B9C0", Type: "db.session.query", Code: "TGDB002I",
			Time:    time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC),
			Cluster: "c1", User: "alice", Roles: []string{"dev"},
		},
		Session:  events.Session{SID: "s-1", EI: 7},
		Database: events.Database{Service: "pg", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"},
		Query:    "select * from orders where id = $1", Parameters: []string{"42"},
	}
}

// edit encodes the query event, applies change to its JSON object and
// encodes it again.
func edit(t *testing.T, change func(map[string]any)) []byte {
	t.Helper()
	b, err := json.Marshal(query())
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	change(obj)
	out, _ := json.Marshal(obj)
	return out
}

func TestValidQueryPasses(t *testing.T) {
	if err := ValidateEvent(query()); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(query())
	if err := Validate(b); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidEvents(t *testing.T) {
	cases := []struct {
		name   string
		event  []byte
		fields []string
		says   []string
	}{
		{"missing required field", edit(t, func(o map[string]any) { delete(o, "db_query") }),
			[]string{"db_query"}, []string{"db.session.query", `missing required field "db_query"`}},
		{"unknown extra field", edit(t, func(o map[string]any) { o["db_password"] = "x" }),
			[]string{"db_password"}, []string{"db.session.query", `unknown field "db_password"`}},
		{"wrong type of field", edit(t, func(o map[string]any) { o["ei"] = "seven" }),
			[]string{"ei"}, []string{"db.session.query", `field "ei"`, "want integer"}},
		{"negative unsigned", edit(t, func(o map[string]any) { o["ei"] = -1 }),
			[]string{"ei"}, []string{`field "ei"`}},
		{"wrong element type", edit(t, func(o map[string]any) { o["roles"] = []any{"dev", 3} }),
			[]string{"roles/1"}, []string{`field "roles/1"`}},
		{"code of another type", edit(t, func(o map[string]any) { o["code"] = "TGDB003I" }),
			[]string{"code"}, []string{`field "code"`}},
		{"time not a date-time", edit(t, func(o map[string]any) { o["time"] = "yesterday" }),
			[]string{"time"}, []string{`field "time"`, "not a valid date-time"}},
		{"truncation flag not boolean", edit(t, func(o map[string]any) { o["db_query_truncated"] = "yes" }),
			[]string{"db_query_truncated"}, []string{`field "db_query_truncated"`}},
		{"unknown event type", edit(t, func(o map[string]any) { o["type"] = "db.session.teleport" }),
			[]string{"type"}, []string{"unknown event type", "db.session.teleport"}},
		{"type that is not a name", edit(t, func(o map[string]any) { o["type"] = "../index" }),
			[]string{"type"}, []string{"unknown event type"}},
		{"no type", edit(t, func(o map[string]any) { delete(o, "type") }),
			[]string{"type"}, []string{`no "type"`}},
		{"not JSON", []byte(`{"type":`), nil, []string{"not valid JSON"}},
		{"not an object", []byte(`["db.session.query"]`), nil, []string{"not a JSON object"}},
		{"trailing data", append(edit(t, func(map[string]any) {}), []byte(` {}`)...), nil, []string{"not valid JSON"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.event)
			if err == nil {
				t.Fatalf("accepted %s", c.event)
			}
			var ve *Error
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not *schemas.Error: %v", err, err)
			}
			if !slices.Equal(ve.Fields, c.fields) {
				t.Errorf("Fields = %q, want %q (%v)", ve.Fields, c.fields, err)
			}
			if strings.Contains(err.Error(), "yesterday") {
				t.Errorf("error %q repeats the offending value", err)
			}
			for _, s := range c.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestTruncationFlagPasses(t *testing.T) {
	ev := edit(t, func(o map[string]any) {
		o["db_query"] = "select * from orders wh"
		o["db_query_truncated"] = true
		o["db_query_parameters_truncated"] = true
	})
	if err := Validate(ev); err != nil {
		t.Fatal(err)
	}
}

func TestFailureCodeAccepted(t *testing.T) {
	for _, s := range events.Specs() {
		if s.FailCode == "" {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(fill(t, s), &obj); err != nil {
			t.Fatal(err)
		}
		for _, code := range []string{s.Code, s.FailCode} {
			obj["code"] = code
			b, _ := json.Marshal(obj)
			if err := Validate(b); err != nil {
				t.Errorf("%s with code %s: %v", s.Type, code, err)
			}
		}
	}
}

func TestValidateEventChecksGoType(t *testing.T) {
	q := query()
	q.Type = "db.session.result"
	err := ValidateEvent(q)
	if err == nil || !strings.Contains(err.Error(), "registered as \"db.session.query\"") {
		t.Fatalf("want a Go type mismatch error, got %v", err)
	}
	if err := ValidateEvent(nil); err == nil {
		t.Fatal("nil event accepted")
	}
}

// TestImportableEverywhere keeps this package a leaf above events: it may
// import no project package but events and its own internal packages, and
// events (with its in-package tests) must not import it, so any test in the
// project can use the validator without an import cycle.
func TestImportableEverywhere(t *testing.T) {
	const module = "github.com/tollgate-db/tollgate/"
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string]bool{}
	var visit func(path string)
	visit = func(path string) {
		if deps[path] {
			return
		}
		deps[path] = true
		p, err := build.Default.ImportDir(filepath.Join(root, strings.TrimPrefix(path, module)), 0)
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		imports := p.Imports
		if path == module+"events" {
			imports = append(imports, p.TestImports...)
		}
		for _, imp := range imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if imp == module+"schemas" {
				t.Fatalf("%s imports schemas: tests that use the validator would form a cycle", path)
			}
			visit(imp)
		}
	}
	p, err := build.Default.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range p.Imports {
		if !strings.HasPrefix(imp, module) {
			continue
		}
		if imp != module+"events" && !strings.HasPrefix(imp, module+"schemas/internal/") {
			t.Errorf("schemas imports %s; keep it to events so every package's tests can import it", imp)
		}
		visit(imp)
	}
}

func BenchmarkValidate(b *testing.B) {
	ev, err := json.Marshal(query())
	if err != nil {
		b.Fatal(err)
	}
	if err := Validate(ev); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(ev)))
	b.ResetTimer()
	for b.Loop() {
		if err := Validate(ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestProtocolEnumComplete: a database of every protocol Tollgate speaks
// must be registrable, so db.create's db_protocol enum names each of them
// (the tag in events/state_events.go lists them by hand).
func TestProtocolEnumComplete(t *testing.T) {
	raw, err := os.ReadFile("db.create.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	got := doc.Properties["db_protocol"].Enum
	for _, name := range protocol.Names() {
		if !slices.Contains(got, name) {
			t.Errorf("db.create's db_protocol enum %v lacks protocol %q: add it to events.DBCreate's tag", got, name)
		}
	}
}
