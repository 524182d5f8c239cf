package events

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// stdJSON is what encoding/json writes for ev with HTML escaping off.
func stdJSON(t testing.TB, ev Event) []byte {
	t.Helper()
	b, err := appendJSON(nil, ev)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return b
}

var nastyStrings = []string{
	"", "select 1", `quote " backslash \ slash /`, "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f",
	"<html>&amp;</html>", "héllo wörld €", "日本語", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82", "emoji 🎉",
	strings.Repeat("x", 300),
}

// fill sets every field of the struct v points to from r, descending into
// embedded structs, so a field the plan misses shows up as a difference.
func fill(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == timeType {
			zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+30*60), time.FixedZone("y", -7*3600)}
			tm := time.Unix(r.Int64N(1<<33), r.Int64N(1e9)).In(zones[r.IntN(len(zones))])
			if r.IntN(5) == 0 {
				tm = tm.Truncate(time.Second)
			}
			v.Set(reflect.ValueOf(tm))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(r, v.Field(i))
			}
		}
	case reflect.String:
		v.SetString(pick(r))
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		vals := []int64{0, 1, -1, math.MaxInt8, math.MinInt8, math.MaxInt16, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64}
		n := vals[r.IntN(len(vals))]
		if v.OverflowInt(n) {
			n = int64(r.IntN(100)) - 50
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		vals := []uint64{0, 1, math.MaxUint8, math.MaxUint16, math.MaxUint32, math.MaxUint64}
		n := vals[r.IntN(len(vals))]
		if v.OverflowUint(n) {
			n = uint64(r.IntN(100))
		}
		v.SetUint(n)
	case reflect.Slice:
		switch r.IntN(3) {
		case 0:
			v.SetZero()
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		default:
			s := reflect.MakeSlice(v.Type(), 1+r.IntN(3), 3)
			for i := range s.Len() {
				fill(r, s.Index(i))
			}
			v.Set(s)
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		if v.Type().Key().Kind() == reflect.String {
			for range r.IntN(3) {
				k := reflect.New(v.Type().Key()).Elem()
				k.SetString(pick(r))
				e := reflect.New(v.Type().Elem()).Elem()
				fill(r, e)
				m.SetMapIndex(k, e)
			}
		}
		v.Set(m)
	case reflect.Pointer:
		if r.IntN(2) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		fill(r, p.Elem())
		v.Set(p)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(r.Float64() * 1000)
	}
}

func pick(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	return nastyStrings[r.IntN(len(nastyStrings))]
}

// Every registered event type, filled at random many times, encodes to
// exactly what encoding/json writes, whether or not a plan serves it.
func TestEventJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	planned := 0
	for _, s := range Specs() {
		if planFor(reflect.TypeOf(s.New()).Elem()) != nil {
			planned++
		}
		zero := s.New()
		if got, want := must(appendEvent(nil, zero)), stdJSON(t, zero); !bytes.Equal(got, want) {
			t.Fatalf("%s zero value:\n got %s\nwant %s", s.Type, got, want)
		}
		for range 300 {
			ev := s.New()
			fill(r, reflect.ValueOf(ev).Elem())
			got, err := appendEvent(nil, ev)
			want, werr := appendJSON(nil, ev)
			if (err != nil) != (werr != nil) {
				t.Fatalf("%s: errors differ: %v vs %v", s.Type, err, werr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s:\n got %s\nwant %s", s.Type, got, want)
			}
		}
	}
	if planned == 0 {
		t.Fatal("no registered event type is served by a plan")
	}
	if planFor(reflect.TypeFor[Query]()) == nil {
		t.Fatal("db.session.query, the hottest event, is not served by a plan")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

type withInts struct {
	Envelope
	A []int8   `json:"a"`
	B []int64  `json:"b,omitempty"`
	C []uint16 `json:"c"`
	D []uint   `json:"d,omitempty"`
	E int16    `json:"e,omitempty"`
	F uint8    `json:"f"`
	G bool     `json:"g,omitempty"`
	H string   // no tag: named by the field
}

// Kinds no registered type uses yet are right too.
func TestEventJSONOtherKinds(t *testing.T) {
	if planFor(reflect.TypeFor[withInts]()) == nil {
		t.Fatal("withInts has no plan")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		ev := &withInts{}
		fill(r, reflect.ValueOf(ev).Elem())
		if got, want := must(appendEvent(nil, ev)), stdJSON(t, ev); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	}
}

type withBytes struct {
	Envelope
	B []byte `json:"b"`
}

type withMap struct {
	Envelope
	Labels map[string]string `json:"labels"`
}

type withDup struct {
	Envelope
	ID string `json:"id"`
}

type withString struct {
	Envelope
	N int `json:"n,string"`
}

type withPtr struct {
	Envelope
	P *string `json:"p"`
}

type withFloat struct {
	Envelope
	F float64 `json:"f"`
}

type withCustom struct {
	Envelope
	C custom `json:"c"`
}

type custom string

func (c custom) MarshalText() ([]byte, error) { return []byte("custom:" + string(c)), nil }

// Types a plan cannot encode exactly fall back to encoding/json and still
// encode right.
func TestEventJSONFallsBack(t *testing.T) {
	for _, ev := range []Event{
		&withMap{Labels: map[string]string{"b": "2", "a": "1"}},
		&withDup{ID: "outer"},
		&withString{N: 7},
		&withPtr{},
		&withFloat{F: 1.5},
		&withCustom{C: "x"},
		&withBytes{B: []byte("raw")},
	} {
		if planFor(reflect.TypeOf(ev).Elem()) != nil {
			t.Errorf("%T got a plan", ev)
		}
		if got, want := must(appendEvent(nil, ev)), stdJSON(t, ev); !bytes.Equal(got, want) {
			t.Errorf("%T:\n got %s\nwant %s", ev, got, want)
		}
	}
	// A time encoding/json refuses is refused the same way.
	ev := &Query{}
	ev.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := appendEvent(nil, ev); err == nil {
		t.Fatal("year 10000 encoded")
	}
}

func FuzzEventJSON(f *testing.F) {
	for _, s := range nastyStrings {
		f.Add(s, s, uint64(len(s)), true)
	}
	f.Fuzz(func(t *testing.T, query, param string, ei uint64, ok bool) {
		evs := []Event{
			&Query{Envelope: Envelope{ID: param, User: query, Time: time.Unix(int64(ei%(1<<34)), int64(ei%1e9)).UTC()},
				Session: Session{SID: param, EI: ei}, Query: query, Parameters: []string{param, query}},
			&Result{Status: Status{Success: ok, Error: query}, ErrorMessage: param, DurationNs: int64(ei)},
		}
		for _, ev := range evs {
			if got, want := must(appendEvent(nil, ev)), stdJSON(t, ev); !bytes.Equal(got, want) {
				t.Fatalf("%T:\n got %s\nwant %s", ev, got, want)
			}
		}
	})
}
