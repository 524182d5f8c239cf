// Package access holds roles and the access decision: which identity may
// reach which database as which database user and database name.
//
// Roles are written in YAML (kind: role) and parsed strictly. The decision
// itself, Decide, is a pure function of the identity, its roles, the
// database's labels and the requested db_user and db_name, so the broker
// (filtering database lists) and the agents (admitting sessions) reach the
// same answer from the same inputs.
package access

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// KindRole is the only kind this package reads.
const KindRole = "role"

// Role is one role as written in YAML and stored in role.create events.
type Role struct {
	Kind     string   `yaml:"kind" json:"kind" jsonschema:"enum=role,description=Always role"`
	Metadata Metadata `yaml:"metadata" json:"metadata"`
	Spec     RoleSpec `yaml:"spec" json:"spec"`
}

// Name is the role's name (metadata.name).
func (r Role) Name() string { return r.Metadata.Name }

// Metadata names and describes a role.
type Metadata struct {
	Name        string `yaml:"name" json:"name" jsonschema:"description=Role name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty" jsonschema:"description=What the role is for"`
}

// RoleSpec is what a role allows, denies, and the session options it sets.
type RoleSpec struct {
	Allow   Conditions `yaml:"allow,omitempty" json:"allow" jsonschema:"description=What the role grants"`
	Deny    Conditions `yaml:"deny,omitempty" json:"deny" jsonschema:"description=What the role forbids; deny wins over any allow"`
	Options OptionSpec `yaml:"options,omitempty" json:"options" jsonschema:"description=Session options; across roles the most restrictive wins"`
}

// Conditions is one side (allow or deny) of a role.
type Conditions struct {
	// DBLabels select databases by label: every key listed must be present
	// on the database with a value that matches one of the listed values.
	// The key '*' with the value '*' selects every database.
	DBLabels Labels `yaml:"db_labels,omitempty" json:"db_labels,omitempty" jsonschema:"description=Database labels to match: label key to accepted values (exact or '*' or glob or ^regex$)"`
	// DBUsers and DBNames list database users and database names: exact
	// values, '*', globs, ^regexes$ or trait templates.
	DBUsers []string `yaml:"db_users,omitempty" json:"db_users,omitempty" jsonschema:"description=Database users (exact or '*' or glob or ^regex$ or {{template}})"`
	DBNames []string `yaml:"db_names,omitempty" json:"db_names,omitempty" jsonschema:"description=Database names (exact or '*' or glob or ^regex$ or {{template}})"`
	// Request lists roles that may be requested through access requests.
	Request *RequestConditions `yaml:"request,omitempty" json:"request,omitempty" jsonschema:"description=Roles that may be requested"`
	// ReviewRequests lists roles whose requests may be reviewed.
	ReviewRequests *ReviewConditions `yaml:"review_requests,omitempty" json:"review_requests,omitempty" jsonschema:"description=Roles whose access requests may be reviewed"`
}

// empty reports whether no database condition is set.
func (c Conditions) empty() bool {
	return len(c.DBLabels) == 0 && len(c.DBUsers) == 0 && len(c.DBNames) == 0
}

// RequestConditions says which roles may be requested.
type RequestConditions struct {
	Roles          []string `yaml:"roles" json:"roles" jsonschema:"description=Role names or patterns"`
	ReasonRequired bool     `yaml:"reason_required,omitempty" json:"reason_required,omitempty" jsonschema:"description=A request must give a reason"`
	// Approvals is how many distinct reviewers must approve (1 when
	// unset); one denial denies. MaxDuration caps how long an approved
	// request grants its roles; PendingTTL is how long it may wait for
	// reviews. Across roles the strictest value wins (RequestPolicyOf).
	Approvals   int    `yaml:"approvals,omitempty" json:"approvals,omitempty" jsonschema:"description=Approvals needed from distinct reviewers (default 1); one denial denies"`
	MaxDuration string `yaml:"max_duration,omitempty" json:"max_duration,omitempty" jsonschema:"description=Longest access an approved request grants (e.g. 4h)"`
	PendingTTL  string `yaml:"pending_ttl,omitempty" json:"pending_ttl,omitempty" jsonschema:"description=How long a request waits for reviews before it expires (e.g. 1h)"`
}

// ReviewConditions says which roles' requests may be reviewed.
type ReviewConditions struct {
	Roles []string `yaml:"roles" json:"roles" jsonschema:"description=Role names or patterns"`
}

// OptionSpec holds the session options of one role. Durations are kept as
// written ("8h") so the stored role reads like the YAML it came from;
// Validate checks them and Options merges them.
type OptionSpec struct {
	MaxSessionTTL         string `yaml:"max_session_ttl,omitempty" json:"max_session_ttl,omitempty" jsonschema:"description=Longest certificate a user of this role gets (e.g. 8h)"`
	ClientIdleTimeout     string `yaml:"client_idle_timeout,omitempty" json:"client_idle_timeout,omitempty" jsonschema:"description=Idle database sessions are closed after this long (e.g. 30m)"`
	DisconnectExpiredCert *bool  `yaml:"disconnect_expired_cert,omitempty" json:"disconnect_expired_cert,omitempty" jsonschema:"description=End sessions when the user's certificate expires"`
	AuditMode             string `yaml:"audit_mode,omitempty" json:"audit_mode,omitempty" jsonschema:"enum=strict,enum=async,description=How sessions are audited"`
	MySQLLocalInfile      *bool  `yaml:"mysql_local_infile,omitempty" json:"mysql_local_infile,omitempty" jsonschema:"description=Whether MySQL and MariaDB clients may send files with LOAD DATA LOCAL INFILE (default true; false in any role refuses it)"`
	RequireMFA            *bool  `yaml:"require_mfa,omitempty" json:"require_mfa,omitempty" jsonschema:"description=The role is granted only by a login that used a second factor (TOTP, or the identity provider's)"`
	RequireSessionMFA     *bool  `yaml:"require_session_mfa,omitempty" json:"require_session_mfa,omitempty" jsonschema:"description=Each database session needs a second factor checked for it: tg db connect, login and proxy get a certificate for that one database and database user, valid a minute to start the session"`
	RedisMonitor          *bool  `yaml:"redis_monitor,omitempty" json:"redis_monitor,omitempty" jsonschema:"description=Whether Redis clients may run MONITOR, which streams every client's commands (default false; true in a role allows it unless another role says false)"`
}

// RequiresMFA reports whether r is granted only to logins with a second
// factor.
func (r Role) RequiresMFA() bool {
	return r.Spec.Options.RequireMFA != nil && *r.Spec.Options.RequireMFA
}

// RequiresSessionMFA reports whether r needs a second factor for each
// database session.
func (r Role) RequiresSessionMFA() bool {
	return r.Spec.Options.RequireSessionMFA != nil && *r.Spec.Options.RequireSessionMFA
}

// Labels maps a label key to the values it accepts.
type Labels map[string]Values

// Values is a list of strings that YAML may also write as one scalar
// (env: prod is env: [prod]).
type Values []string

// UnmarshalYAML accepts a scalar or a sequence of scalars.
func (v *Values) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*v = Values{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(Values, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a label value must be a string", c.Line)
			}
			out = append(out, c.Value)
		}
		*v = out
		return nil
	}
	return fmt.Errorf("line %d: label values must be a string or a list of strings", n.Line)
}

var roleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidRoleName says why name cannot name a role, or nil.
func ValidRoleName(name string) error {
	if !roleNameRE.MatchString(name) {
		return fmt.Errorf("role name %q: want 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", name)
	}
	return nil
}

// FieldError is a validation error about one field of a role; Path is the
// dotted path of the field as written in YAML (spec.allow.db_users[1]).
type FieldError struct {
	Role string
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Role == "" {
		return e.Path + ": " + e.Msg
	}
	return "role " + e.Role + ": " + e.Path + ": " + e.Msg
}

// Validate checks everything Decide and Options rely on: the name, the
// patterns (regexes compile, templates are known), the label wildcard and
// the options. Roles are validated before they are stored, so a stored
// role never fails here. The error is a *FieldError.
func (r Role) Validate() error {
	fe := func(path, format string, args ...any) error {
		return &FieldError{Role: r.Metadata.Name, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	if r.Kind != KindRole {
		return fe("kind", "%q: want %q", r.Kind, KindRole)
	}
	if err := ValidRoleName(r.Metadata.Name); err != nil {
		return &FieldError{Path: "metadata.name", Msg: err.Error()}
	}
	for _, side := range []struct {
		name string
		c    Conditions
	}{{"allow", r.Spec.Allow}, {"deny", r.Spec.Deny}} {
		if path, msg := side.c.validate(); path != "" {
			return fe("spec."+side.name+"."+path, "%s", msg)
		}
	}
	if path, msg := r.Spec.Options.validate(); path != "" {
		return fe("spec.options."+path, "%s", msg)
	}
	return nil
}

func (c Conditions) validate() (path, msg string) {
	keys := make([]string, 0, len(c.DBLabels))
	for k := range c.DBLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := c.DBLabels[k]
		if k == "" {
			return "db_labels", "empty label key"
		}
		if len(vs) == 0 {
			return "db_labels." + k, "no values"
		}
		for _, v := range vs {
			if k == Wildcard && v != Wildcard {
				return "db_labels.*", fmt.Sprintf("the key '*' only takes the value '*', not %q", v)
			}
			if err := checkPattern(v); err != nil {
				return "db_labels." + k, err.Error()
			}
		}
	}
	lists := []struct {
		name string
		vs   []string
	}{{"db_users", c.DBUsers}, {"db_names", c.DBNames}}
	if c.Request != nil {
		lists = append(lists, struct {
			name string
			vs   []string
		}{"request.roles", c.Request.Roles})
	}
	if c.ReviewRequests != nil {
		lists = append(lists, struct {
			name string
			vs   []string
		}{"review_requests.roles", c.ReviewRequests.Roles})
	}
	if r := c.Request; r != nil {
		if path, msg := r.validate(); path != "" {
			return "request." + path, msg
		}
	}
	for _, l := range lists {
		for i, v := range l.vs {
			if err := checkPattern(v); err != nil {
				return fmt.Sprintf("%s[%d]", l.name, i), err.Error()
			}
		}
	}
	return "", ""
}

func (o OptionSpec) validate() (path, msg string) {
	for _, d := range []struct{ name, v string }{
		{"max_session_ttl", o.MaxSessionTTL}, {"client_idle_timeout", o.ClientIdleTimeout},
	} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v <= 0 {
			return d.name, fmt.Sprintf("%q is not a positive duration (want e.g. 30m, 8h)", d.v)
		}
	}
	switch o.AuditMode {
	case "", AuditStrict, AuditAsync:
	default:
		return "audit_mode", fmt.Sprintf("%q (want %s or %s)", o.AuditMode, AuditStrict, AuditAsync)
	}
	return "", ""
}

// checkPattern validates one value of db_labels, db_users or db_names.
func checkPattern(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	if strings.Contains(v, "{{") || strings.Contains(v, "}}") {
		_, err := parseTemplate(v)
		return err
	}
	_, err := compileLiteral(v)
	return err
}
