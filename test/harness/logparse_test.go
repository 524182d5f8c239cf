package harness

import (
	"reflect"
	"strings"
	"testing"
)

const samplePostgresLog = "2026-11-21 09:49:02.318 UTC [17787] tg<|> LOG:  database system is ready to accept connections\n" +
	"2026-11-21 09:49:02.364 UTC [17806] tg<alice|postgres> LOG:  statement: SELECT 1;\n" +
	"\tSELECT 'a\n" +
	"\t\tb'\n" +
	"2026-11-21 09:49:02.365 UTC [17807] tg<bob|app> LOG:  execute <unnamed>: SELECT $1::int\n" +
	"2026-11-21 09:49:02.365 UTC [17807] tg<bob|app> DETAIL:  parameters: $1 = '41'\n" +
	"2026-11-21 09:49:02.366 UTC [17807] tg<bob|app> LOG:  statement: SELECT x FROM nope\n" +
	"2026-11-21 09:49:02.367 UTC [17807] tg<bob|app> ERROR:  relation \"nope\" does not exist at character 15\n" +
	"2026-11-21 09:49:02.367 UTC [17807] tg<bob|app> STATEMENT:  SELECT x FROM nope\n" +
	"2026-11-21 09:49:02.368 UTC [17806] tg<alice|postgres> ERROR:  syntax error at or near \"SELEC\" at character 1\n" +
	"2026-11-21 09:49:02.368 UTC [17806] tg<alice|postgres> STATEMENT:  SELEC\n" +
	"\t1\n" +
	"not a log line: written by something else\n" +
	"2026-11-21 09:49:02.369 UTC [17807] tg<bob|app> LOG:  execute fetch from S_1/C_2: SELECT * FROM big\n"

func TestParseStatementLog(t *testing.T) {
	got, err := parseStatementLog(strings.NewReader(samplePostgresLog))
	if err != nil {
		t.Fatal(err)
	}
	want := []PostgresStatement{
		{Time: "2026-11-21 09:49:02.364 UTC", PID: 17806, User: "alice", Database: "postgres", Kind: "statement", Text: "SELECT 1;\nSELECT 'a\n\tb'"},
		{Time: "2026-11-21 09:49:02.365 UTC", PID: 17807, User: "bob", Database: "app", Kind: "execute", Name: "<unnamed>", Text: "SELECT $1::int", Parameters: "$1 = '41'"},
		{Time: "2026-11-21 09:49:02.366 UTC", PID: 17807, User: "bob", Database: "app", Kind: "statement", Text: "SELECT x FROM nope", Error: `relation "nope" does not exist at character 15`},
		{Time: "2026-11-21 09:49:02.368 UTC", PID: 17806, User: "alice", Database: "postgres", Kind: "rejected", Text: "SELEC\n1", Error: `syntax error at or near "SELEC" at character 1`},
		{Time: "2026-11-21 09:49:02.369 UTC", PID: 17807, User: "bob", Database: "app", Kind: "execute", Name: "S_1/C_2", Text: "SELECT * FROM big"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", got, want)
	}
}

const sampleGeneralLog = "/usr/sbin/mariadbd, Version: 10.11.19-MariaDB-0+deb12u1-log (Debian 12). started with:\n" +
	"Tcp port: 45399  Unix socket: /tmp/x/mariadbd.sock\n" +
	"Time\t\t    Id Command\tArgument\n" +
	"261121  9:49:59\t      3 Connect\troot@localhost on  using Socket\n" +
	"\t\t      3 Query\tSELECT 1;\n" +
	"SELECT 'a\n" +
	"\tb'\n" +
	"\t\t      3 Quit\t\n" +
	"261121 10:00:01\t     17 Connect\talice@127.0.0.1 on test using SSL/TLS\n" +
	"\t\t     17 Prepare\tSELECT ? + 1\n" +
	"\t\t     17 Execute\tSELECT 41 + 1\n" +
	"\t\t     17 Close stmt\t\n" +
	"\t\t 123456 Init DB\ttest\n"

func TestParseGeneralLog(t *testing.T) {
	got, err := parseGeneralLog(strings.NewReader(sampleGeneralLog))
	if err != nil {
		t.Fatal(err)
	}
	want := []MariaDBLogEntry{
		{Thread: 3, Command: "Connect", User: "root@localhost", Argument: "root@localhost on  using Socket"},
		{Thread: 3, Command: "Query", User: "root@localhost", Argument: "SELECT 1;\nSELECT 'a\n\tb'"},
		{Thread: 3, Command: "Quit", User: "root@localhost", Argument: ""},
		{Thread: 17, Command: "Connect", User: "alice@127.0.0.1", Argument: "alice@127.0.0.1 on test using SSL/TLS"},
		{Thread: 17, Command: "Prepare", User: "alice@127.0.0.1", Argument: "SELECT ? + 1"},
		{Thread: 17, Command: "Execute", User: "alice@127.0.0.1", Argument: "SELECT 41 + 1"},
		{Thread: 17, Command: "Close stmt", User: "alice@127.0.0.1", Argument: ""},
		{Thread: 123456, Command: "Init DB", Argument: "test"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", got, want)
	}
}

func FuzzParseStatementLog(f *testing.F) {
	f.Add(samplePostgresLog)
	f.Add("2026-11-21 09:49:02.364 UTC [1] tg<a|b> STATEMENT:  x\n\ty\n")
	f.Add("\t\t\n")
	f.Fuzz(func(t *testing.T, log string) {
		entries, err := parseStatementLog(strings.NewReader(log))
		if err != nil {
			return
		}
		for _, e := range entries {
			switch e.Kind {
			case "statement", "execute", "rejected":
			default:
				t.Fatalf("entry of unknown kind %q", e.Kind)
			}
			if e.Kind == "rejected" && e.Error == "" {
				t.Fatal("rejected statement without its error")
			}
		}
	})
}

func FuzzParseGeneralLog(f *testing.F) {
	f.Add(sampleGeneralLog)
	f.Add("\t\t 1 Query\t\n\t\t 1 Query\tx\ny\n")
	f.Add("Time\t\t    Id Command\tArgument\n")
	f.Fuzz(func(t *testing.T, log string) {
		entries, err := parseGeneralLog(strings.NewReader(log))
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Command == "" || e.Thread < 0 {
				t.Fatalf("entry without command or with negative thread: %+v", e)
			}
		}
	})
}

// BenchmarkParseStatementLog reads a log of 10,000 statements, some of
// them long multi-line ones, as an end-to-end test comparing a busy
// session's audit stream with the server's record would.
func BenchmarkParseStatementLog(b *testing.B) {
	var log strings.Builder
	long := strings.Repeat("\tSELECT 1 UNION ALL\n", 200)
	for i := range 10000 {
		if i%100 == 0 {
			log.WriteString("2026-11-21 09:49:02.364 UTC [17806] tg<alice|postgres> LOG:  statement: SELECT\n" + long)
		} else {
			log.WriteString(samplePostgresLog)
		}
	}
	data := log.String()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseStatementLog(strings.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
