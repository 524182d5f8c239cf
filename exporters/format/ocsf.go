package format

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// OCSF mapping; schemas/ocsf.md documents it class by class.
const (
	// OCSFVersion is the OCSF schema version the output claims.
	OCSFVersion = "1.9.0"

	ClassBase              = 0
	ClassAuthentication    = 3002
	ClassAuthorizeSession  = 3003
	ClassUserManagement    = 3007
	ClassDatastoreActivity = 6005

	// Activities of Datastore Activity.
	activityRead   = 1
	activityUpdate = 2
	activityQuery  = 4
	activityWrite  = 5
	activityCreate = 6
	activityDelete = 7
	activityOther  = 99
)

// OCSFClassNames names the classes the transform produces.
var OCSFClassNames = map[int]string{
	ClassBase:              "Base Event",
	ClassAuthentication:    "Authentication",
	ClassAuthorizeSession:  "Authorize Session",
	ClassUserManagement:    "User Management",
	ClassDatastoreActivity: "Datastore Activity",
}

var ocsfCategoryNames = map[int]string{
	0: "Uncategorized",
	3: "Identity & Access Management",
	6: "Application Activity",
}

// ocsfActivities names the activities per class (OCSF's enumerations, the
// ones used here plus Unknown and Other).
var ocsfActivities = map[int]map[int]string{
	ClassBase: {0: "Unknown", 99: "Other"},
	ClassDatastoreActivity: {0: "Unknown", 1: "Read", 2: "Update", 3: "Connect", 4: "Query", 5: "Write",
		6: "Create", 7: "Delete", 8: "List", 9: "Encrypt", 10: "Decrypt", 99: "Other"},
	ClassAuthentication:   {0: "Unknown", 1: "Logon", 2: "Logoff", 99: "Other"},
	ClassAuthorizeSession: {0: "Unknown", 1: "Assign Privileges", 2: "Assign Groups", 3: "Assign Roles", 99: "Other"},
	ClassUserManagement: {0: "Unknown", 1: "Create", 2: "Update", 3: "Delete", 4: "Enable", 5: "Disable", 6: "Lock",
		7: "Unlock", 8: "Password Change", 9: "Password Reset", 14: "Assign Privileges", 15: "Remove Privileges",
		16: "Assign Roles", 17: "Remove Roles", 99: "Other"},
}

// OCSFActivityName is the caption of an activity of a class ("" if the
// class has no such activity).
func OCSFActivityName(class, activity int) string { return ocsfActivities[class][activity] }

type ocsfFormat struct{ opts Options }

func (*ocsfFormat) Name() string { return OCSF }

// obj is one OCSF object; encoding/json writes its keys sorted.
type obj = map[string]any

func (f *ocsfFormat) Append(dst []byte, env *Envelope, event []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(event))
	dec.UseNumber()
	var ev obj
	if err := dec.Decode(&ev); err != nil {
		return dst, fmt.Errorf("ocsf: event %s: %w", env.ID, err)
	}
	out := f.transform(env, ev, event)
	b, err := json.Marshal(out)
	if err != nil {
		return dst, fmt.Errorf("ocsf: event %s: %w", env.ID, err)
	}
	return append(dst, b...), nil
}

// transform maps one decoded event. Every field of the event also goes,
// unchanged, into unmapped.tollgate, so nothing is lost in the mapping,
// and its bytes into unmapped.tollgate_event.
func (f *ocsfFormat) transform(env *Envelope, ev obj, event []byte) obj {
	o := obj{}
	class, activity := ClassBase, activityOther
	switch t := env.Type; {
	case t == "db.session.start":
		class, activity = ClassAuthorizeSession, 1
		f.authorizeSession(o, env, ev)
	case t == "db.session.end":
		class, activity = ClassAuthentication, 2
		f.logoff(o, env, ev)
	case t == "user.login":
		class, activity = ClassAuthentication, 1
		f.logon(o, env, ev)
	case t == "db.session.rejected":
		class, activity = ClassAuthentication, 1
		f.rejected(o, env, ev)
	case strings.HasPrefix(t, "db.session."):
		class = ClassDatastoreActivity
		activity = f.datastore(o, env, ev)
	case t == "user.create" || t == "user.update" || t == "user.delete" || t == "user.password_set":
		class = ClassUserManagement
		activity = f.userChange(o, env, ev)
	case t == "access_request.update":
		class = ClassUserManagement
		activity = f.accessRequest(o, env, ev)
	case t == "lock.create" && str(ev, "target_user") != "":
		class, activity = ClassUserManagement, 6
		o["user"] = user(str(ev, "target_user"))
	default:
		o["message"] = describe(env.Type)
	}
	category := class / 1000
	o["class_uid"] = class
	o["class_name"] = OCSFClassNames[class]
	o["category_uid"] = category
	o["category_name"] = ocsfCategoryNames[category]
	o["activity_id"] = activity
	o["activity_name"] = OCSFActivityName(class, activity)
	o["type_uid"] = class*100 + activity
	o["type_name"] = OCSFClassNames[class] + ": " + OCSFActivityName(class, activity)
	o["time"] = env.Time.UnixMilli()
	sev, sevName := 1, "Informational"
	switch env.Severity() {
	case 'W':
		sev, sevName = 3, "Medium"
	case 'E':
		sev, sevName = 4, "High"
	}
	o["severity_id"], o["severity"] = sev, sevName
	if s, ok := ev["success"].(bool); ok {
		if s {
			o["status_id"], o["status"] = 1, "Success"
		} else {
			o["status_id"], o["status"] = 2, "Failure"
			if e, _ := ev["error"].(string); e != "" {
				o["status_detail"] = e
			}
		}
	}
	if _, ok := o["message"]; !ok {
		o["message"] = describe(env.Type)
	}
	md := obj{
		"version":            OCSFVersion,
		"product":            obj{"name": "Tollgate", "vendor_name": "Tollgate", "version": f.productVersion()},
		"uid":                env.ID,
		"original_event_uid": env.ID,
		"event_code":         env.Code,
		"log_name":           logName(env.Type),
		"original_time":      env.Time.UTC().Format(time.RFC3339Nano),
	}
	if env.SID != "" {
		md["correlation_uid"] = env.SID
	}
	if ei, ok := ev["ei"].(json.Number); ok {
		if n, err := ei.Int64(); err == nil {
			md["sequence"] = n
		}
	}
	o["metadata"] = md
	if _, ok := o["actor"]; !ok && env.User != "" {
		o["actor"] = obj{"user": user(env.User)}
	}
	o["unmapped"] = obj{"tollgate": ev, OCSFEventField: string(event)}
	return o
}

// OCSFEventField is the member of unmapped that holds the event's bytes,
// verbatim, as a JSON string: unmapped.tollgate is the event decoded, which
// a SIEM can search, but its bytes are no longer the ones that were hashed
// and signed, so an auditor verifies a session's chain and seal from this
// one (events.EventHash, events.Unsealed). Scan accepts valid UTF-8 only,
// so the string decodes to the very bytes stored.
const OCSFEventField = "tollgate_event"

func (f *ocsfFormat) productVersion() string {
	if f.opts.ProductVersion != "" {
		return f.opts.ProductVersion
	}
	return "dev"
}

// logName is the stream an event type lives in.
func logName(typ string) string {
	if strings.HasPrefix(typ, "db.session.") || typ == "user.login" || typ == "cert.issue" || strings.HasPrefix(typ, "exporter.") {
		return events.AuditStream
	}
	return events.StateStream
}

// describe is the registry's one-sentence description of a type.
func describe(typ string) string {
	if s, ok := events.Lookup(typ); ok {
		return s.Doc
	}
	return typ
}

func str(ev obj, k string) string { s, _ := ev[k].(string); return s }

func num(ev obj, k string) (int64, bool) {
	n, ok := ev[k].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// user is an OCSF user; a name-less one (a login that gave no name) is
// "unknown", as OCSF wants a name, uid or account.
func user(name string) obj {
	if name == "" {
		name = "unknown"
	}
	return obj{"name": name, "type_id": 1, "type": "User"}
}

// endpoint parses host:port (or a URI) into an OCSF network endpoint; nil
// when there is nothing to say.
func endpoint(addr string) obj {
	if addr == "" {
		return nil
	}
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	e := obj{}
	if ip := net.ParseIP(host); ip != nil {
		e["ip"] = ip.String()
	} else if host != "" {
		e["hostname"] = host
	}
	if p, err := strconv.Atoi(port); err == nil {
		e["port"] = p
	}
	if len(e) == 0 {
		return nil
	}
	return e
}

func database(ev obj) obj {
	d := obj{"type_id": 1, "type": "Relational"}
	if s := str(ev, "db_service"); s != "" {
		d["uid"] = s
		d["name"] = s
	}
	if n := str(ev, "db_name"); n != "" {
		d["name"] = n
	}
	if p := protocol.Get(str(ev, "db_protocol")).OCSF; p != "" {
		d["desc"] = p
	}
	return d
}

// dstDatabase is the database's endpoint, named by its Tollgate service.
func dstDatabase(ev obj) obj {
	e := endpoint(str(ev, "db_uri"))
	if s := str(ev, "db_service"); s != "" {
		if e == nil {
			e = obj{}
		}
		e["svc_name"] = s
	}
	return e
}

// srcSession is where a session's activity came from: the client's
// address when the event carries it, and always the session id.
func srcSession(env *Envelope, ev obj) obj {
	e := endpoint(str(ev, "client_addr"))
	if e == nil {
		e = obj{}
	}
	if env.SID != "" {
		e["uid"] = env.SID
	}
	if len(e) == 0 {
		e["name"] = "unknown"
	}
	return e
}

func (f *ocsfFormat) datastore(o obj, env *Envelope, ev obj) int {
	actor := obj{}
	if env.User != "" {
		actor["user"] = user(env.User)
	}
	if env.SID != "" {
		actor["session"] = obj{"uid": env.SID}
	}
	if len(actor) == 0 {
		actor["app_name"] = "tollgate"
	}
	o["actor"] = actor
	o["src_endpoint"] = srcSession(env, ev)
	if d := dstDatabase(ev); d != nil {
		o["dst_endpoint"] = d
	}
	o["database"] = database(ev)
	o["type_id"], o["type"] = 1, "Database"
	q := str(ev, "db_query")
	if q != "" {
		qi := obj{"query_string": q}
		if n := str(ev, "db_statement_name"); n != "" {
			qi["name"] = n
		}
		o["query_info"] = qi
	}
	if d, ok := num(ev, "db_duration_ns"); ok && d > 0 {
		o["duration"] = d / int64(time.Millisecond)
	}
	if c := str(ev, "db_error_code"); c != "" {
		o["status_code"] = c
	}
	if m := str(ev, "db_error_message"); m != "" {
		o["status_detail"] = m
	}
	switch env.Type {
	case "db.session.result":
		return statementActivity(str(ev, "db_command_tag"))
	case "db.session.postgres.copy":
		return activityWrite
	case "db.session.malformed_packet":
		o["status_id"], o["status"] = 2, "Failure"
		o["status_detail"] = str(ev, "reason")
		return activityOther
	}
	if q != "" {
		return statementActivity(q)
	}
	return activityOther
}

// statementActivity maps a statement (or a command tag, which starts with
// the statement's verb) to a Datastore Activity by its first keyword.
func statementActivity(s string) int {
	s = strings.TrimLeft(s, " \t\r\n(")
	end := strings.IndexAny(s, " \t\r\n(;")
	if end < 0 {
		end = len(s)
	}
	switch strings.ToUpper(s[:end]) {
	case "SELECT", "WITH", "SHOW", "TABLE", "VALUES", "FETCH", "EXPLAIN", "DESCRIBE", "DESC":
		return activityQuery
	case "INSERT", "COPY", "MERGE", "UPSERT", "REPLACE", "LOAD":
		return activityWrite
	case "UPDATE":
		return activityUpdate
	case "DELETE", "TRUNCATE", "DROP":
		return activityDelete
	case "CREATE":
		return activityCreate
	case "READ":
		return activityRead
	}
	return activityOther
}

func (f *ocsfFormat) authorizeSession(o obj, env *Envelope, ev obj) {
	o["user"] = user(env.User)
	if env.SID != "" {
		o["session"] = obj{"uid": env.SID}
	}
	// The privileges the session asked for: the database, as whom, in which
	// database; the rule that decided is the status detail of a refusal and
	// kept in unmapped either way.
	priv := []string{"db_service:" + str(ev, "db_service")}
	if u := str(ev, "db_user"); u != "" {
		priv = append(priv, "db_user:"+u)
	}
	if n := str(ev, "db_name"); n != "" {
		priv = append(priv, "db_name:"+n)
	}
	o["privileges"] = priv
	if d := dstDatabase(ev); d != nil {
		o["dst_endpoint"] = d
	}
	if s := endpoint(str(ev, "client_addr")); s != nil {
		o["src_endpoint"] = s
	}
}

func (f *ocsfFormat) logon(o obj, env *Envelope, ev obj) {
	o["user"] = user(env.User)
	o["service"] = obj{"name": "tollgate"}
	o["auth_protocol_id"] = 99
	o["auth_protocol"] = str(ev, "method")
	o["is_remote"] = true
	if s := endpoint(str(ev, "source_addr")); s != nil {
		o["src_endpoint"] = s
	}
	if r := str(ev, "reason"); r != "" {
		o["status_detail"] = r
	}
}

// rejected maps connections refused before a session: failed logons, the
// user being whoever the certificate (trusted or not) names, counted as
// OCSF aggregates events (count, start_time, end_time).
func (f *ocsfFormat) rejected(o obj, env *Envelope, ev obj) {
	name := ""
	if c, ok := ev["client_cert"].(map[string]any); ok {
		name, _ = c["subject"].(string)
	}
	o["user"] = user(name)
	svc := str(ev, "db_service")
	if svc == "" {
		svc = "tollgate"
	}
	o["service"] = obj{"name": svc}
	o["is_remote"] = true
	if s := endpoint(str(ev, "client_addr")); s != nil {
		o["src_endpoint"] = s
	}
	if sni := str(ev, "sni"); sni != "" {
		o["dst_endpoint"] = obj{"svc_name": sni}
	}
	o["status_id"], o["status"] = 2, "Failure"
	detail := str(ev, "reason")
	if e := str(ev, "error"); e != "" {
		detail += ": " + e
	}
	o["status_detail"] = detail
	if n, ok := num(ev, "count"); ok {
		o["count"] = n
	}
	for k, to := range map[string]string{"first": "start_time", "last": "end_time"} {
		if t, err := time.Parse(time.RFC3339Nano, str(ev, k)); err == nil {
			o[to] = t.UnixMilli()
		}
	}
}

func (f *ocsfFormat) logoff(o obj, env *Envelope, ev obj) {
	o["user"] = user(env.User)
	o["service"] = obj{"name": str(ev, "db_service")}
	if d := dstDatabase(ev); d != nil {
		o["dst_endpoint"] = d
	}
	if env.SID != "" {
		o["session"] = obj{"uid": env.SID}
	}
	if d, ok := num(ev, "db_duration_ns"); ok && d > 0 {
		o["duration"] = d / int64(time.Millisecond)
	}
	o["status_detail"] = str(ev, "reason")
}

func (f *ocsfFormat) userChange(o obj, env *Envelope, ev obj) int {
	o["user"] = user(str(ev, "name"))
	if roles, ok := ev["user_roles"].([]any); ok {
		priv := make([]string, 0, len(roles))
		for _, r := range roles {
			if s, ok := r.(string); ok {
				priv = append(priv, "role:"+s)
			}
		}
		o["privileges"] = priv
	}
	switch env.Type {
	case "user.create":
		return 1
	case "user.delete":
		return 3
	case "user.password_set":
		return 8
	}
	if lu := str(ev, "locked_until"); lu != "" {
		return 6
	}
	return 2
}

// accessRequest maps the review of an access request: an approval assigns
// the requested roles to the requester, a denial is the same activity
// refused, expiry removes them.
func (f *ocsfFormat) accessRequest(o obj, env *Envelope, ev obj) int {
	id := str(ev, "request_id")
	req, found := AccessRequest{}, false
	if f.opts.Requests != nil && id != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, ok, err := f.opts.Requests.AccessRequest(ctx, id)
		cancel()
		if err == nil && ok {
			req, found = r, true
		}
	}
	if found {
		o["user"] = user(req.Requester)
		priv := make([]string, 0, len(req.Roles))
		for _, r := range req.Roles {
			priv = append(priv, "role:"+r)
		}
		o["privileges"] = priv
	} else {
		// The requester is unknown here; the request id still names the
		// request for a SIEM join with access_request.create.
		o["user"] = obj{"uid": "access_request:" + id}
	}
	if env.User != "" {
		o["actor"] = obj{"user": user(env.User)}
	}
	switch str(ev, "state") {
	case "approved":
		o["status_id"], o["status"] = 1, "Success"
		return 16
	case "denied":
		o["status_id"], o["status"] = 2, "Failure"
		o["status_detail"] = "access request denied: " + str(ev, "reason")
		return 16
	case "expired":
		return 17
	}
	return 0
}
