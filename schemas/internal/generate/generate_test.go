package generate

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/events"
)

// level is an enum written as text, like many protocol constants.
type level uint8

func (l level) MarshalText() ([]byte, error) { return []byte([]string{"low", "high"}[l&1]), nil }

type inner struct {
	N uint8 `json:"n"`
}

// synthetic covers the field shapes the reflection library gets loose or
// wrong; it is never registered, so the real registry stays untouched.
type synthetic struct {
	events.Envelope
	Tags   []string          `json:"tags" jsonschema:"description=Tags, in order"`
	Count  uint16            `json:"count" jsonschema:"description=How many\\, at most 9"`
	Meta   map[string]string `json:"meta,omitempty"`
	Nested *inner            `json:"nested"`
	Any    any               `json:"any"`
	Mode   string            `json:"mode" jsonschema:"enum=a,enum=b,description=Mode, a or b"`
	Addr   net.IP            `json:"addr"`
	Level  level             `json:"level"`
	Hidden string            `json:"-"`
	hidden string
}

func spec(typ string, newFn func() events.Event) events.Spec {
	return events.Spec{Type: typ, Code: "TGZZ001I", FailCode: "TGZZ001W", Doc: "A synthetic event.", New: newFn}
}

func TestSchemaFollowsEncoding(t *testing.T) {
	doc, err := Schema(spec("test.synthetic", func() events.Event { return &synthetic{hidden: "x"} }))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(doc)
	var got struct {
		Required []string       `json:"required"`
		Props    map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tags", "count", "nested", "any", "mode", "id", "type", "code", "time", "cluster"} {
		if !slices.Contains(got.Required, name) {
			t.Errorf("%s not required: %v", name, got.Required)
		}
	}
	for _, name := range []string{"meta", "user", "roles", "Hidden", "hidden"} {
		if slices.Contains(got.Required, name) {
			t.Errorf("%s required", name)
		}
	}
	if _, ok := got.Props["Hidden"]; ok {
		t.Error(`json:"-" field has a property`)
	}
	check := func(prop, key, want string) {
		t.Helper()
		p, _ := got.Props[prop].(map[string]any)
		g, _ := json.Marshal(p[key])
		if string(g) != want {
			t.Errorf("%s.%s = %s, want %s", prop, key, g, want)
		}
	}
	check("tags", "type", `["array","null"]`)
	check("tags", "description", `"Tags, in order"`)
	check("count", "minimum", `0`)
	check("count", "description", `"How many, at most 9"`)
	check("meta", "type", `"object"`)
	check("addr", "type", `"string"`) // a nil net.IP is written as ""
	check("addr", "format", `null`)
	check("level", "type", `"string"`)
	check("level", "minimum", `null`)
	check("mode", "enum", `["a","b"]`)
	check("mode", "description", `"Mode, a or b"`)
	check("code", "enum", `["TGZZ001I","TGZZ001W"]`)
	check("type", "const", `"test.synthetic"`)
	check("time", "format", `"date-time"`)
	if got.Props["any"] != true {
		t.Errorf("interface field: %v, want the schema true", got.Props["any"])
	}
	nested, _ := json.Marshal(got.Props["nested"])
	if !strings.Contains(string(nested), `"null"`) || !strings.Contains(string(nested), `"minimum":0`) {
		t.Errorf("nested pointer should accept null and keep its unsigned field non-negative: %s", nested)
	}
}

type clashA struct{ X string }
type clashB struct{ X string }

// clash has two embedded fields named X at the same depth: encoding/json
// writes neither, so a schema requiring X would reject every real event.
type clash struct {
	events.Envelope
	clashA
	clashB
}

func TestMismatchWithEncodingIsAnError(t *testing.T) {
	_, err := Schema(spec("test.clash", func() events.Event { return &clash{} }))
	if err == nil || !strings.Contains(err.Error(), `"X"`) || !strings.Contains(err.Error(), "test.clash") {
		t.Fatalf("want an error naming the type and X, got %v", err)
	}
}

type noEnvelope struct{ events.Session }

func (*noEnvelope) Header() *events.Envelope { return nil }

func TestTypeWithoutEnvelopeIsAnError(t *testing.T) {
	_, err := Schema(spec("test.bare", func() events.Event { return &noEnvelope{} }))
	if err == nil || !strings.Contains(err.Error(), "embed events.Envelope") {
		t.Fatalf("got %v", err)
	}
}

func TestFileNameClashIsAnError(t *testing.T) {
	s := spec("test.synthetic", func() events.Event { return &synthetic{} })
	if _, err := Files([]events.Spec{s, s}); err == nil {
		t.Fatal("two specs of one type produced no error")
	}
}

func TestTagDescription(t *testing.T) {
	for tag, want := range map[string]string{
		"description=plain":                  "plain",
		"description=a, b, c":                "a, b, c",
		`description=a\, b`:                  "a, b",
		"enum=x,enum=y,description=one, two": "one, two",
		"description=first, second,required": "first, second",
		"title=T,description=d,example=e":    "d",
		"enum=x":                             "",
		"":                                   "",
		"description=trailing comma,":        "trailing comma",
		"description=e.g. x,y":               "e.g. x",
	} {
		if got := tagDescription(tag); got != want {
			t.Errorf("tagDescription(%q) = %q, want %q", tag, got, want)
		}
	}
}
