package mysql_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

func mariadbCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatal("mariadb not found: install the Debian package mariadb-client")
	}
	out, err := exec.Command("mariadb", append([]string{"--no-defaults", "--protocol=TCP", "--connect-timeout=10", "--batch", "--skip-column-names"}, args...)...).CombinedOutput()
	return string(out), err
}

func hostPort(addr string) (string, string) {
	h, p, _ := net.SplitHostPort(addr)
	return h, p
}

func TestMariaDBCLIThroughTunnel(t *testing.T) {
	s := newStack(t, stackOptions{})
	h, p := hostPort(s.tunnel(t))
	out, err := mariadbCLI(t, "-h"+h, "-P"+p, "-uapp", "test", "-e",
		"INSERT INTO accounts (id, owner) VALUES (1, 'ann'), (2, 'bob'); SELECT owner FROM accounts ORDER BY id; SELECT nope FROM accounts")
	if err == nil || !strings.Contains(out, "ann\nbob") || !strings.Contains(out, "ERROR 1054 (42S22)") {
		t.Fatalf("mariadb: %v\n%s", err, out)
	}
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	start := agenttest.OfType(evs, "db.session.start")[0]
	if start["success"] != true || start["user"] != "alice" || start["db_user"] != "app" || start["db_name"] != "test" || start["db_protocol"] != "mysql" {
		t.Fatalf("start %v", start)
	}
	conn := agenttest.OfType(evs, "db.session.mysql.connected")
	if len(conn) != 1 || !strings.Contains(conn[0]["db_server_version"].(string), "MariaDB") || conn[0]["client_program"] != "mysql" && conn[0]["client_program"] != "mariadb" && conn[0]["client_program"] != "libmariadb" {
		t.Fatalf("connected %v", conn)
	}
	var results []string
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		results = append(results, r["db_command_tag"].(string)+"/"+strOr(r["db_error_code"]))
	}
	got := strings.Join(results, " ")
	for _, want := range []string{"COM_QUERY rows=0 affected=2/", "COM_QUERY rows=2 affected=0/", "COM_QUERY/1054"} {
		if !strings.Contains(got, want) {
			t.Fatalf("results %s lack %s", got, want)
		}
	}
	if n := groundTruth(t, s, evs, "app"); n < 3 {
		t.Fatalf("database logged %d statements of app, want at least 3", n)
	}
}

func strOr(v any) string {
	s, _ := v.(string)
	return s
}

func TestMariaDBCLIDirectAndUseRefused(t *testing.T) {
	s := newStack(t, stackOptions{})
	h, p := hostPort(s.direct)
	tlsArgs := []string{"-h" + h, "-P" + p, "--ssl-ca=" + s.HostCAFile, "--ssl-cert=" + s.UserCertFile, "--ssl-key=" + s.UserKeyFile, "--ssl-verify-server-cert", "-uapp"}
	out, err := mariadbCLI(t, append(tlsArgs, "test", "-e", "SELECT CONCAT('tls:', VARIABLE_VALUE <> '') FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")...)
	if err != nil || strings.TrimSpace(out) != "tls:1" {
		t.Fatalf("direct: %v\n%s", err, out)
	}
	// The CLI's use command is COM_INIT_DB.
	out, err = mariadbCLI(t, append(tlsArgs, "test", "-e", "use secret")...)
	if err == nil || !strings.Contains(out, "ERROR 1044 (42000)") || !strings.Contains(out, "secret") {
		t.Fatalf("use secret: %v\n%s", err, out)
	}
	// Connecting to a database the role does not allow.
	out, err = mariadbCLI(t, append(tlsArgs, "secret", "-e", "SELECT 1")...)
	if err == nil || !strings.Contains(out, "1044") || !strings.Contains(out, `db_name "secret"`) {
		t.Fatalf("connect to secret: %v\n%s", err, out)
	}
	// TLS without a user certificate: refused in the protocol's words.
	out, err = mariadbCLI(t, "-h"+h, "-P"+p, "--ssl-ca="+s.HostCAFile, "-uapp", "test", "-e", "SELECT 1")
	if err == nil || !strings.Contains(out, "1045") || !strings.Contains(out, "no client certificate") {
		t.Fatalf("no certificate: %v\n%s", err, out)
	}
	// Without TLS the agent refuses before anything else.
	out, err = mariadbCLI(t, "-h"+h, "-P"+p, "--skip-ssl", "-uapp", "test", "-e", "SELECT 1")
	if err == nil || !strings.Contains(out, "3159") || !strings.Contains(out, "without TLS are refused") {
		t.Fatalf("plaintext: %v\n%s", err, out)
	}
	evs := s.WaitAudit(t, "refusals", func(evs []map[string]any) bool {
		return len(agenttest.OfType(evs, "db.session.mysql.change_db")) >= 1 && len(agenttest.OfType(evs, "db.session.malformed_packet")) >= 1 &&
			len(agenttest.OfType(evs, "db.session.start")) >= 3
	})
	agenttest.CheckGapless(t, evs)
	cd := agenttest.OfType(evs, "db.session.mysql.change_db")[0]
	if cd["success"] != false || cd["code"] != "TGMY006W" || cd["db_schema"] != "secret" || cd["db_command"] != "COM_INIT_DB" {
		t.Fatalf("change_db %v", cd)
	}
	mp := agenttest.OfType(evs, "db.session.malformed_packet")[0]
	if !strings.Contains(mp["reason"].(string), "without SSLRequest") {
		t.Fatalf("malformed %v", mp)
	}
	logged, err := s.db.GeneralLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range logged {
		if strings.HasPrefix(e.User, "app@") && (e.Command == "Init DB" || strings.Contains(e.Argument, "secret")) {
			t.Fatalf("a refused command reached the database: %+v", e)
		}
	}
}
