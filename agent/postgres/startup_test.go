package postgres

import (
	"strings"
	"testing"
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
		got := startupRefusal(c.params, c.list)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%v %v: %q, want %q", c.params, c.list, got, c.want)
		}
	}
	if got := splitOptions(`  -c a=b\ c  --x=y `); strings.Join(got, "|") != "-c|a=b c|--x=y" {
		t.Errorf("split %q", got)
	}
}
