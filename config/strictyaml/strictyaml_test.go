package strictyaml

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type tlsConf struct {
	Verify bool   `yaml:"verify"`
	CA     string `yaml:"ca"`
}

type listener struct {
	Name string   `yaml:"name"`
	Port int      `yaml:"port"`
	Tags []string `yaml:"tags"`
	TLS  tlsConf  `yaml:"tls"`
}

type common struct {
	Cluster string `yaml:"cluster"`
}

type conf struct {
	common    `yaml:",inline"`
	Listeners []listener          `yaml:"listeners"`
	Limits    map[string]int      `yaml:"limits"`
	Labels    map[string]string   `yaml:"labels"`
	Ratio     float64             `yaml:"ratio"`
	Nested    map[string]listener `yaml:"nested"`
	Ignored   string              `yaml:"-"`
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown top key", "cluster: a\nclustr: b\n", `line 2: unknown key "clustr"`},
		{"tag dash is unknown", "ignored: x\n", `line 1: unknown key "ignored"`},
		{"unknown nested key", "listeners:\n  - name: a\n    tls:\n      verfy: true\n", `line 4: unknown key "listeners[0].tls.verfy"`},
		{"unknown in second item", "listeners:\n  - name: a\n  - name: b\n    prot: 1\n", `line 4: unknown key "listeners[1].prot"`},
		{"unknown in flow mapping", "listeners:\n  - {name: a, tls: {verify: true, cq: x}}\n", `line 2: unknown key "listeners[0].tls.cq"`},
		{"wrong int", "listeners:\n  - name: a\n    port: many\n", "line 3: key \"listeners[0].port\" has the wrong type: !!str `many` is not an integer"},
		{"wrong list", "listeners:\n  - tags: web\n", "line 2: key \"listeners[0].tags\" has the wrong type: !!str `web` is not a list"},
		{"wrong mapping", "listeners:\n  - tls: yes please\n", "line 2: key \"listeners[0].tls\" has the wrong type: !!str `yes please` is not a mapping"},
		{"wrong top mapping", "limits: [1]\n", `line 1: key "limits" has the wrong type: !!seq is not a mapping`},
		{"wrong bool", "listeners:\n  - tls:\n      verify: maybe\n", "line 3: key \"listeners[0].tls.verify\" has the wrong type: !!str `maybe` is not a boolean (true or false)"},
		{"wrong number", "ratio: half\n", "line 1: key \"ratio\" has the wrong type: !!str `half` is not a number"},
		{"wrong map value", "limits:\n  a: 1\n  b: lots\n", "line 3: key \"limits.b\" has the wrong type: !!str `lots` is not an integer"},
		{"duplicate key names it", "cluster: a\ncluster: b\n", `line 2: mapping key "cluster" already defined at line 1 (key "cluster")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c conf
			err := Decode([]byte(tc.in), &c)
			if err == nil {
				t.Fatalf("no error for %q", tc.in)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestDecodeSeveralErrorsInOne(t *testing.T) {
	var c conf
	err := Decode([]byte("cluster: a\nbogus: 1\nratio: x\n"), &c)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`line 2: unknown key "bogus"`, `line 3: key "ratio" has the wrong type`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestDecodeGood(t *testing.T) {
	in := "cluster: c\nratio: 0.5\nlisteners:\n  - name: a\n    port: 5432\n    tags: [x, y]\n    tls: {verify: true, ca: /ca.pem}\nlimits: {a: 1}\nnested:\n  n: {name: z}\n"
	var c conf
	if err := Decode([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if c.Cluster != "c" || c.Ratio != 0.5 || len(c.Listeners) != 1 || c.Listeners[0].Port != 5432 ||
		!c.Listeners[0].TLS.Verify || c.Listeners[0].TLS.CA != "/ca.pem" || c.Limits["a"] != 1 || c.Nested["n"].Name != "z" ||
		len(c.Listeners[0].Tags) != 2 {
		t.Fatalf("decoded %+v", c)
	}
	var empty conf
	if err := Decode(nil, &empty); err != nil {
		t.Fatalf("empty document: %v", err)
	}
}

func TestDecodeSyntaxErrorUnchanged(t *testing.T) {
	var c conf
	err := Decode([]byte("cluster: [a\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "yaml:") {
		t.Fatalf("want yaml's own syntax error, got %v", err)
	}
}

func node(t *testing.T, s string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}

func TestDecodeNode(t *testing.T) {
	const where = "exporters[0] (a).settings"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown", "name: a\nprot: 1\n", `line 2: unknown key "exporters[0] (a).settings.prot"`},
		{"unknown nested", "tls:\n  verify: true\n  cafile: x\n", `line 3: unknown key "exporters[0] (a).settings.tls.cafile"`},
		{"unknown in map of structs", "nested:\n  n:\n    nme: x\n", `line 3: unknown key "exporters[0] (a).settings.nested.n.nme"`},
		{"unknown in list", "listeners:\n  - {name: a, bad: 1}\n", `line 2: unknown key "exporters[0] (a).settings.listeners[0].bad"`},
		{"inline fields known", "cluster: a\nclster: b\n", `line 2: unknown key "exporters[0] (a).settings.clster"`},
		{"wrong int", "port: many\n", "line 1: key \"exporters[0] (a).settings.port\" has the wrong type: !!str `many` is not an integer"},
		{"wrong bool", "tls:\n  verify: maybe\n", "line 2: key \"exporters[0] (a).settings.tls.verify\" has the wrong type: !!str `maybe` is not a boolean (true or false)"},
		{"wrong list", "tags: {a: b}\n", `line 1: key "exporters[0] (a).settings.tags" has the wrong type: !!map is not a list`},
		{"wrong mapping", "tls: [a]\n", `line 1: key "exporters[0] (a).settings.tls" has the wrong type: !!seq is not a mapping`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// listener plus the inline common fields and a few containers.
			var v struct {
				listener  `yaml:",inline"`
				common    `yaml:",inline"`
				Listeners []listener          `yaml:"listeners"`
				Nested    map[string]listener `yaml:"nested"`
			}
			err := DecodeNode(node(t, tc.in), &v, where)
			if err == nil {
				t.Fatalf("no error for %q", tc.in)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestDecodeNodeGoodAndEmpty(t *testing.T) {
	var l listener
	if err := DecodeNode(node(t, "name: a\nport: 1\ntls: {verify: true}\n"), &l, "x"); err != nil {
		t.Fatal(err)
	}
	if l.Name != "a" || l.Port != 1 || !l.TLS.Verify {
		t.Fatalf("decoded %+v", l)
	}
	for _, n := range []*yaml.Node{nil, {}, node(t, "~")} {
		if err := DecodeNode(n, &l, "x"); err != nil {
			t.Fatalf("empty node: %v", err)
		}
	}
	if err := DecodeNode(node(t, "a: 1\n"), l, "x"); err == nil || !strings.Contains(err.Error(), "non-pointer") {
		t.Fatalf("decoding into a non-pointer: %v", err)
	}
}

func TestKeysByLine(t *testing.T) {
	root := node(t, "a:\n  b: 1\n  c: {d: 1, e: 2}\n  f:\n    - x\n    - g: 1\n")
	got := KeysByLine(root)
	// Line 5 holds both the list and its first item: the list's key wins.
	want := map[int]string{1: "a", 2: "a.b", 3: "a.c", 4: "a.f", 5: "a.f", 6: "a.f[1].g"}
	for line, k := range want {
		if got[line] != k {
			t.Errorf("line %d: got %q, want %q", line, got[line], k)
		}
	}
	lines := LinesByKey(got)
	if lines["a.f"] != 4 {
		t.Errorf("LinesByKey a.f = %d, want 4", lines["a.f"])
	}
	for path, want := range map[string]int{"a.f[1].g": 6, "a.f[1].g.h": 6, "a.c.zz": 3, "a.f[7]": 4} {
		if l, ok := LineOf(lines, path); !ok || l != want {
			t.Errorf("LineOf(%q) = %d, %v; want %d", path, l, ok, want)
		}
	}
	if _, ok := LineOf(lines, "nosuch.key"); ok {
		t.Error("LineOf found a line for an unknown path")
	}
}

func TestRewordMultiDocument(t *testing.T) {
	// A stream of documents: the strict pass fails on the second one, and
	// the key is named from that document's own lenient parse.
	src := "name: a\n---\nname: b\nport: x\n"
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	var docs []*yaml.Node
	lenient := yaml.NewDecoder(strings.NewReader(src))
	for {
		var n yaml.Node
		if lenient.Decode(&n) != nil {
			break
		}
		docs = append(docs, &n)
	}
	for i := 0; ; i++ {
		var l listener
		err := dec.Decode(&l)
		if err == nil {
			continue
		}
		got := Reword(err, docs[i], &l).Error()
		want := "line 4: key \"port\" has the wrong type: !!str `x` is not an integer"
		if i != 1 || got != want {
			t.Fatalf("document %d: got %q, want %q", i, got, want)
		}
		break
	}
	if err := Reword(errPlain{}, nil, nil); err != (errPlain{}) {
		t.Fatalf("a non-type error was changed: %v", err)
	}
}

type errPlain struct{}

func (errPlain) Error() string { return "plain" }

func TestFields(t *testing.T) {
	f := Fields(typeOf[conf]())
	for _, k := range []string{"cluster", "listeners", "limits", "labels", "ratio", "nested"} {
		if _, ok := f[k]; !ok {
			t.Errorf("Fields lacks %q", k)
		}
	}
	if _, ok := f["ignored"]; ok {
		t.Error(`Fields has a field tagged "-"`)
	}
	if _, ok := f["common"]; ok {
		t.Error("Fields has the inline struct itself")
	}
}

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }
