package postgres

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tollgate-db/tollgate/agent"
)

// DefaultRefusedParameters are the settings a client may not give at
// startup unless a database's refuse_startup_parameters says otherwise:
// each would silence or thin the database's own statement log or its
// audit extension, the ground truth the audit trail is checked against.
// A name ending in * is a prefix.
var DefaultRefusedParameters = []string{
	"log_statement", "log_min_duration_statement", "log_min_duration_sample",
	"log_statement_sample_rate", "log_transaction_sample_rate",
	"log_min_messages", "log_min_error_statement", "log_duration",
	"log_connections", "log_disconnections", "log_replication_commands",
	"log_parameter_max_length", "log_parameter_max_length_on_error",
	"log_error_verbosity", "log_line_prefix", "log_destination",
	"pgaudit.*", "session_replication_role", "session_preload_libraries",
	"local_preload_libraries", "event_triggers",
}

// startupSetting is one setting of a startup message: a parameter of its
// own or a switch of its options parameter.
type startupSetting struct {
	name, value string
	via         string // how the client gave it, for the refusal message
}

// startupSettings lists the settings a startup message asks for: every
// parameter but user, database, options and replication, and each
// -c name=value, -cname=value and --name=value of options (split on
// blanks, a backslash keeping the next byte, as the server splits them).
// Names are folded as the server folds them: lower case, - as _. An
// options switch other than -c or -- is an error: the server would take
// it as a command-line switch of its own.
func startupSettings(params map[string]string) ([]startupSetting, error) {
	var out []startupSetting
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case "user", "database", "options", "replication":
			continue
		}
		out = append(out, startupSetting{name: strings.ToLower(k), value: params[k], via: "startup parameter " + k})
	}
	args := splitOptions(params["options"])
	for i := 0; i < len(args); i++ {
		a := args[i]
		var kv string
		switch {
		case a == "-c" && i+1 < len(args):
			i++
			kv = args[i]
		case strings.HasPrefix(a, "--"), strings.HasPrefix(a, "-c"):
			kv = a[2:]
		default:
			return nil, fmt.Errorf("startup option %q is not allowed through the agent: options may only set parameters with -c name=value or --name=value", a)
		}
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("startup option %q sets no value: use -c name=value", a)
		}
		name = strings.ToLower(strings.ReplaceAll(name, "-", "_"))
		out = append(out, startupSetting{name: name, value: value, via: "options " + a})
	}
	return out, nil
}

// splitOptions splits an options string on blanks; a backslash keeps the
// byte after it.
func splitOptions(s string) []string {
	var (
		args []string
		cur  strings.Builder
		have bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			have = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

// refusedParameter returns the first setting the list refuses, or nil.
func refusedParameter(settings []startupSetting, list []string) *startupSetting {
	for i := range settings {
		if parameterListed(settings[i].name, list) {
			return &settings[i]
		}
	}
	return nil
}

// parameterListed reports whether the folded name is on the list.
func parameterListed(name string, list []string) bool {
	for _, e := range list {
		e = strings.ToLower(e)
		if p, ok := strings.CutSuffix(e, "*"); ok {
			if strings.HasPrefix(name, p) {
				return true
			}
		} else if name == e {
			return true
		}
	}
	return false
}

// recordedParameters are a startup message's parameters as name=value,
// sorted, for the session start event.
func recordedParameters(params map[string]string) []string {
	out := make([]string, 0, len(params))
	for k, v := range params {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// refuseList is the database's refuse_startup_parameters, or
// DefaultRefusedParameters when it has none.
func refuseList(db *agent.Database) []string {
	if l := db.Config.RefuseStartupParameters; l != nil {
		return l
	}
	return DefaultRefusedParameters
}

// startupRefusal is why a startup message is refused, or "": an options
// switch the agent does not pass, or a setting of list.
func startupRefusal(params map[string]string, list []string) string {
	settings, err := startupSettings(params)
	if err != nil {
		return err.Error()
	}
	if r := refusedParameter(settings, list); r != nil {
		return fmt.Sprintf("parameter %q may not be set when connecting through the agent (%s=%s): it would change the database's own logging or auditing", r.name, r.via, r.value)
	}
	return ""
}
