// Package ocsfcheck checks an OCSF event against the attributes its class
// requires (OCSF 1.9: the base event, the class, and the objects they hold),
// so tests can prove that what the exporters emit is what it claims to be.
// It knows the classes the exporters produce; any other class is an error.
package ocsfcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// rule is what one class asks for beyond the base event.
type rule struct {
	name       string
	category   int
	activities []int
	required   []string   // attributes that must be present
	oneOf      [][]string // at least one of each group
}

var classes = map[int]rule{
	0: {name: "Base Event", category: 0, activities: []int{0, 99}},
	3002: {name: "Authentication", category: 3, activities: []int{0, 1, 2, 3, 4, 5, 99},
		required: []string{"user"}, oneOf: [][]string{{"service", "dst_endpoint"}}},
	3003: {name: "Authorize Session", category: 3, activities: []int{0, 1, 2, 3, 99},
		required: []string{"user"}, oneOf: [][]string{{"privileges", "groups", "iam_roles"}}},
	3007: {name: "User Management", category: 3, activities: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 99},
		required: []string{"user"}},
	6005: {name: "Datastore Activity", category: 6, activities: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99},
		required: []string{"actor", "src_endpoint"}, oneOf: [][]string{{"database", "databucket", "table"}}},
}

// baseRequired are required by the base event, hence by every class.
var baseRequired = []string{"activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time", "type_uid"}

// Check validates one encoded OCSF event and returns every problem found.
func Check(b []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		return fmt.Errorf("ocsf: not a JSON object: %w", err)
	}
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	for _, k := range baseRequired {
		if !present(ev[k]) {
			bad("missing required attribute %s", k)
		}
	}
	class, okc := integer(ev["class_uid"])
	activity, oka := integer(ev["activity_id"])
	category, _ := integer(ev["category_uid"])
	typeUID, okt := integer(ev["type_uid"])
	if _, ok := integer(ev["severity_id"]); !ok {
		bad("severity_id is not an integer")
	}
	if t, ok := integer(ev["time"]); !ok || t <= 0 {
		bad("time is not a positive integer (milliseconds since the epoch)")
	}
	r, known := classes[int(class)]
	switch {
	case !okc:
		bad("class_uid is not an integer")
	case !known:
		bad("class_uid %d is not a class this checker knows", class)
	default:
		if int(category) != r.category {
			bad("category_uid %d does not match class %d (want %d)", category, class, r.category)
		}
		if n, _ := ev["class_name"].(string); n != "" && n != r.name {
			bad("class_name %q is not %q", n, r.name)
		}
		if oka && !contains(r.activities, int(activity)) {
			bad("activity_id %d is not an activity of %s", activity, r.name)
		}
		if oka && okt && typeUID != class*100+activity {
			bad("type_uid %d is not class_uid*100+activity_id (%d)", typeUID, class*100+activity)
		}
		for _, k := range r.required {
			if !present(ev[k]) {
				bad("%s: missing required attribute %s", r.name, k)
			}
		}
		for _, g := range r.oneOf {
			if !anyPresent(ev, g) {
				bad("%s: needs at least one of %s", r.name, strings.Join(g, ", "))
			}
		}
	}
	checkMetadata(ev["metadata"], bad)
	for _, k := range []string{"user", "actor.user"} {
		if u, ok := lookup(ev, k); ok {
			checkUser(k, u, bad)
		}
	}
	if a, ok := ev["actor"]; ok {
		am, _ := a.(map[string]any)
		if !anyPresent(am, []string{"process", "user", "invoked_by", "session", "app_name", "app_uid"}) {
			bad("actor: needs at least one of process, user, invoked_by, session, app_name, app_uid")
		}
	}
	for _, k := range []string{"src_endpoint", "dst_endpoint"} {
		if e, ok := ev[k]; ok {
			em, _ := e.(map[string]any)
			if !anyPresent(em, []string{"ip", "uid", "name", "hostname", "svc_name", "instance_uid", "interface_uid", "interface_name"}) {
				bad("%s: needs at least one of ip, uid, name, hostname, svc_name, instance_uid, interface_uid, interface_name", k)
			}
		}
	}
	if q, ok := ev["query_info"]; ok {
		qm, _ := q.(map[string]any)
		if !present(qm["query_string"]) {
			bad("query_info: missing required attribute query_string")
		}
	}
	if p, ok := ev["privileges"]; ok {
		l, isList := p.([]any)
		if !isList {
			bad("privileges is not a list")
		}
		for _, v := range l {
			if _, ok := v.(string); !ok {
				bad("privileges holds a non-string")
			}
		}
	}
	if v, ok := lookup(ev, "unmapped.tollgate_event"); ok {
		// The event's bytes, for verifying its hash chain and seal: a
		// string holding one JSON object.
		s, isString := v.(string)
		var obj map[string]json.RawMessage
		if !isString || json.Unmarshal([]byte(s), &obj) != nil {
			bad("unmapped.tollgate_event is not a string holding the event's JSON object")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return errors.New("ocsf: " + strings.Join(errs, "; "))
}

func checkMetadata(m any, bad func(string, ...any)) {
	md, ok := m.(map[string]any)
	if !ok {
		bad("metadata is not an object")
		return
	}
	if !present(md["version"]) {
		bad("metadata: missing required attribute version")
	}
	p, ok := md["product"].(map[string]any)
	if !ok {
		bad("metadata: missing required attribute product")
		return
	}
	if !present(p["name"]) {
		bad("metadata.product: missing required attribute name")
	}
}

func checkUser(where string, u any, bad func(string, ...any)) {
	um, ok := u.(map[string]any)
	if !ok {
		bad("%s is not an object", where)
		return
	}
	if !anyPresent(um, []string{"account", "name", "uid"}) {
		bad("%s: needs at least one of account, name, uid", where)
	}
}

func lookup(ev map[string]any, path string) (any, bool) {
	var cur any = ev
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// present says whether an attribute has a value: empty strings, lists and
// objects count as absent.
func present(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

func anyPresent(m map[string]any, keys []string) bool {
	for _, k := range keys {
		if present(m[k]) {
			return true
		}
	}
	return false
}

func integer(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

func contains(l []int, v int) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}
