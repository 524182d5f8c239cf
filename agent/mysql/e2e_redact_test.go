package mysql_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

func TestPasswordsRedacted(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.db.MustExec(t, "GRANT CREATE USER ON *.* TO 'app'@'%' WITH GRANT OPTION; GRANT ALL ON mysql.* TO 'app'@'%'")
	const (
		plain = "S3cretPW!"
		via   = "V1aSecret"
		set   = "S3tSecret"
		text  = "Er1nSecret"
		bound = "B0undSecretValue"
		echo  = "Err0rSecret"
	)
	h, p := hostPort(s.tunnel(t))
	out, err := mariadbCLI(t, "-h"+h, "-P"+p, "-uapp", "test", "-e",
		"CREATE USER 'bob'@'%' IDENTIFIED BY '"+plain+"'; "+
			"CREATE USER carol IDENTIFIED VIA mysql_native_password USING PASSWORD('"+via+"'); "+
			"CREATE USER dave; SET PASSWORD FOR dave = PASSWORD('"+set+"')")
	if err != nil {
		t.Fatalf("mariadb: %v\n%s", err, out)
	}
	// The server's syntax error quotes the statement from where it failed.
	out, err = mariadbCLI(t, "-h"+h, "-P"+p, "-uapp", "test", "-e", "CREATE USERR frank IDENTIFIED BY '"+echo+"'")
	if err == nil || !strings.Contains(out, "1064") || !strings.Contains(out, echo) {
		t.Fatalf("mariadb: %v\n%s", err, out)
	}
	// go-sql-driver: a text statement, and a server-side prepared one
	// with a password as its parameter (the server accepts no
	// placeholder in IDENTIFIED BY or SET PASSWORD, but PASSWORD(?) is
	// an expression).
	db := s.driver(t, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE USER erin IDENTIFIED WITH mysql_native_password AS PASSWORD('"+text+"')"); err != nil {
		t.Fatal(err)
	}
	var hash, want string
	if err := db.QueryRowContext(ctx, "SELECT PASSWORD(?)", bound).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	db.Close()
	admin, err := sql.Open("mysql", s.db.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.QueryRowContext(ctx, "SELECT PASSWORD('"+bound+"')").Scan(&want); err != nil || hash != want {
		t.Fatalf("PASSWORD(?) through the agent %q, directly %q (%v)", hash, want, err)
	}

	// The database got the statements unchanged: each user logs in with
	// its password.
	for user, pw := range map[string]string{"bob": plain, "carol": via, "dave": set, "erin": text} {
		c := s.db.ConfigWithCert(user, nil)
		c.Passwd = pw
		c.DBName = ""
		conn, err := gomysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		u := sql.OpenDB(conn)
		if err := u.PingContext(ctx); err != nil {
			t.Errorf("%s cannot log in with the password set through the agent: %v", user, err)
		}
		u.Close()
	}

	evs := s.WaitAudit(t, "two sessions end", agenttest.Count("db.session.end", 3))
	var red []string
	for _, ev := range evs {
		if ev["db_query_redacted"] == true {
			red = append(red, ev["type"].(string))
			if q, _ := ev["db_query"].(string); !strings.Contains(q, "'***'") && !strings.Contains(q, "PASSWORD(?)") {
				t.Errorf("redacted query %q", q)
			}
		}
	}
	if got := strings.Join(red, " "); got != "db.session.query db.session.query db.session.query db.session.query db.session.query db.session.mysql.prepare db.session.mysql.execute db.session.mysql.statement" {
		t.Errorf("events that say redacted: %s", got)
	}
	for _, ev := range agenttest.OfType(evs, "db.session.mysql.execute") {
		if ps, _ := ev["db_query_parameters"].([]any); len(ps) != 1 || ps[0] != "***" {
			t.Errorf("execute parameters %v", ev["db_query_parameters"])
		}
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, plain, via, set, text, bound, echo)
}
