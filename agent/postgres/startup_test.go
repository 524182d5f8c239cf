package postgres

import (
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent/redact"
)

func TestStartupRefusal(t *testing.T) {
	cases := []struct {
		params map[string]string
		list   []string
		want   string // part of the refusal; "" when allowed
	}{
		{map[string]string{"user": "app", "application_name": "psql"}, nil, ""},
		{map[string]string{"options": "-c log_statement=none"}, nil, `"log_statement"`},
		{map[string]string{"options": "--log_statement=none"}, nil, `"log_statement"`},
		{map[string]string{"options": "--log-statement=none"}, nil, `"log_statement"`},
		{map[string]string{"options": "-clog_statement=none"}, nil, `"log_statement"`},
		{map[string]string{"options": "-c search_path=a -c Log_Min_Duration_Statement=-1"}, nil, `"log_min_duration_statement"`},
		{map[string]string{"options": `-c application_name=a\ b -c statement_timeout=5s`}, nil, ""},
		{map[string]string{"log_statement": "none"}, nil, `startup parameter log_statement`},
		{map[string]string{"pgaudit.log": "none"}, nil, `"pgaudit.log"`},
		{map[string]string{"options": "-c pgaudit.log_level=debug5"}, nil, `"pgaudit.log_level"`},
		{map[string]string{"options": "-c session_replication_role=replica"}, nil, `"session_replication_role"`},
		{map[string]string{"options": "-d 5"}, nil, `startup option "-d"`},
		{map[string]string{"options": "-c log_statement"}, nil, "sets no value"},
		{map[string]string{"options": "-c log_statement=none"}, []string{}, ""},
		{map[string]string{"options": "-c work_mem=1GB"}, []string{"work_mem"}, `"work_mem"`},
	}
	for _, c := range cases {
		list := c.list
		if list == nil {
			list = DefaultRefusedParameters
		}
		got := startupRefusal(c.params, list)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%v %v: %q, want %q", c.params, c.list, got, c.want)
		}
	}
	if got := splitOptions(`  -c a=b\ c  --x=y `); strings.Join(got, "|") != "-c|a=b c|--x=y" {
		t.Errorf("split %q", got)
	}
}

func TestRefusedSetting(t *testing.T) {
	cases := map[string]string{
		"select 1":                                          "",
		"update t set log_statement = 1":                    "",
		"SET log_statement = 'none'":                        "log_statement",
		"set session log_statement to none":                 "log_statement",
		"SET LOCAL log_min_duration_statement = -1":         "log_min_duration_statement",
		`SET "log_statement" TO DEFAULT`:                    "log_statement",
		"RESET log_statement":                               "log_statement",
		"RESET ALL":                                         "",
		"SET pgaudit.log = 'none'":                          "pgaudit.log",
		"select set_config('log_statement', 'none', false)": "log_statement",
		"SELECT 1; SET session_replication_role = replica":  "session_replication_role",
		"ALTER ROLE app SET log_statement = 'none'":         "log_statement",
		"ALTER DATABASE d SET log_min_messages = panic":     "log_min_messages",
		"ALTER ROLE app IN DATABASE d RESET log_duration":   "log_duration",
		"SET search_path = log_statement":                   "",
		"select 'SET log_statement = none'":                 "",
		"/* SET log_statement = none */ select 1":           "",
		"SET statement_timeout = 0":                         "",
	}
	for q, want := range cases {
		if got := refusedSetting(q, DefaultRefusedParameters); got != want {
			t.Errorf("%q: %q, want %q", q, got, want)
		}
	}
}

// BenchmarkStatementChecks is what masking and the setting check add to
// each statement of the hot path (no secret, no setting).
func BenchmarkStatementChecks(b *testing.B) {
	for _, q := range []string{
		"UPDATE pgbench_accounts SET abalance = abalance + -2345 WHERE aid = 73412;",
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
	} {
		b.Run(strings.Fields(q)[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if refusedSetting(q, DefaultRefusedParameters) != "" {
					b.Fatal("refused")
				}
				if _, f := redact.Postgres(q); f.Any() {
					b.Fatal("secret")
				}
			}
		})
	}
}
