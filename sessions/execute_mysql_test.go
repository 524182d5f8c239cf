package sessions

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// TestExecuteMySQL re-runs a MySQL session, text queries and a prepared
// statement with parameters, on a real MariaDB: on a fresh database the
// results agree with the recorded ones (tags in the agent's form); where
// the data differs, the report says which statement and how.
func TestExecuteMySQL(t *testing.T) {
	m := harness.MariaDB(t)
	m.MustExec(t, "create database shop")
	my := events.Database{Service: "my1", Protocol: "mysql", URI: m.Addr(), User: "app", Name: "shop"}
	ok := func(tag string, rows uint64) *events.Result {
		return &events.Result{Database: my, Status: events.Status{Success: true}, CommandTag: tag, Rows: rows}
	}
	recorded := session(t, "M1",
		&events.SessionStart{Database: my, Status: events.Status{Success: true}},
		&events.Query{Database: my, Query: "create table t (id int auto_increment primary key, name varchar(20))"},
		ok("COM_QUERY rows=0 affected=0", 0),
		&events.Query{Database: my, Query: "insert into t (name) values ('a'), ('b'), (NULL)"},
		ok("COM_QUERY rows=0 affected=3 insert_id=1", 3),
		&events.MySQLPrepare{Database: my, Query: "select name from t where id > ? and name is not null"},
		ok("COM_STMT_PREPARE statement_id=1", 0),
		&events.MySQLExecute{Database: my, StatementID: 1, Query: "select name from t where id > ? and name is not null", Parameters: []string{"0"}, ParameterTypes: []string{"LONGLONG"}},
		ok("COM_STMT_EXECUTE rows=2 affected=0", 2),
		&events.Query{Database: my, Query: "select * from nosuch"},
		&events.Result{Database: my, Status: events.Status{Success: false}, CommandTag: "COM_QUERY", ErrorCode: "1146", ErrorMessage: "Table 'shop.nosuch' doesn't exist"},
		&events.SessionEnd{Database: my, Reason: "client closed the connection", Statements: 4},
	)
	tl, err := FromEvents(recorded)
	if err != nil {
		t.Fatal(err)
	}
	if st := tl.Statements(); len(st) != 4 || len(st[2].Results) != 1 || st[2].Results[0].Tag != "COM_STMT_EXECUTE rows=2 affected=0" {
		t.Fatalf("statements: %+v", st)
	}
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = "root", "unix", m.Socket, "shop"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := Execute(ctx, tl, ExecOptions{Target: c.FormatDSN(), Pace: PaceRecorded})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b)
	if rep.Statements != 4 || rep.Differences != 0 {
		t.Fatalf("fresh database:\n%s", b.String())
	}
	// Again on the same database: the table exists now and holds three
	// rows more.
	rep, err = Execute(ctx, tl, ExecOptions{Target: c.FormatDSN()})
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	_ = rep.WriteText(&b)
	if rep.Differences != 3 || !strings.Contains(b.String(), "recorded COM_QUERY rows=0 affected=0 (0 rows), now ERROR 1050") ||
		!strings.Contains(b.String(), `command tag recorded "COM_STMT_EXECUTE rows=2 affected=0", now "COM_STMT_EXECUTE rows=4 affected=0"`) {
		t.Fatalf("second run:\n%s", b.String())
	}
}
