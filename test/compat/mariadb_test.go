package compat

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// myClient reaches one MariaDB target with go-sql-driver/mysql.
type myClient struct {
	cfg   *gomysql.Config
	admin string // root over the Unix socket, to watch the processlist
	// infile is a CSV file registered for LOAD DATA LOCAL INFILE.
	infile string
}

// myWorld is a MariaDB 10.11 and an agent in front of it, and the two ways
// go-sql-driver reaches it.
func myWorld(t *testing.T) []target[*myClient] {
	a := newAuthority(t, "localhost", "my1", "127.0.0.1")
	// Values of 20 MB need a max_allowed_packet above the default 16 MB;
	// both paths meet the same server.
	m := harness.MariaDBWith(t, harness.MariaDBOptions{TLS: a.dbTLS(t), Users: []string{dbUser}, Args: []string{"--max-allowed-packet=64M"}})
	m.MustExec(t, `CREATE PROCEDURE test.multi(IN n INT)
BEGIN
  SELECT n AS n;
  SELECT 'two' AS s, n * 2 AS d, CAST(n AS DECIMAL(10,2)) AS dec_n;
  SELECT seq FROM seq_1_to_3;
END`)
	eng := mysql.New(mysql.Options{Logger: quiet()})
	_, mysqlPort := a.serveAgent(t, config.Database{Name: "my1", Protocol: "mysql", URI: m.Addr(),
		TLS: config.DatabaseTLS{Mode: "verify-full", CACertFile: m.ServerCAFile}},
		eng, func(srv *agent.Server, rec agent.Recorder, ln net.Listener) net.Listener {
			info, _ := srv.Database("my1")
			return eng.Listener(ln, mysql.ListenerOptions{Cluster: "compat", Recorder: rec, Database: info})
		})

	direct := m.Config(t, dbUser)
	// The agent's MySQL port greets first, like the server, and takes
	// TLS with the user's certificate.
	through := gomysql.NewConfig()
	through.User, through.Net, through.Addr, through.DBName = dbUser, "tcp", mysqlPort, m.Database
	through.TLS = a.clientTLS("127.0.0.1")

	var csv strings.Builder
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&csv, "%d,name %d,%d.%02d,2024-01-02 03:04:%02d\n", i, i, i, i%100, i%60)
	}
	csv.WriteString("5001,\\N,not-a-number,bad-date\n")
	infile := filepath.Join(t.TempDir(), "rows.csv")
	if err := os.WriteFile(infile, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	gomysql.RegisterLocalFile(infile)
	t.Cleanup(func() { gomysql.DeregisterLocalFile(infile) })

	var targets []target[*myClient]
	for _, tg := range []struct {
		name string
		cfg  *gomysql.Config
	}{{"direct", direct}, {"agent", through}} {
		tg.cfg.Timeout = 20 * time.Second
		tg.cfg.MultiStatements = true
		targets = append(targets, target[*myClient]{name: tg.name, client: &myClient{cfg: tg.cfg, admin: m.AdminDSN(), infile: infile}})
	}
	return targets
}

func myCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pool is a database/sql pool of one connection to the target.
func (c *myClient) pool(t *testing.T) *sql.DB {
	t.Helper()
	connector, err := gomysql.NewConnector(c.cfg.Clone())
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// open is one session (database/sql pins it) with the target's
// configuration changed by change.
func (c *myClient) open(t *testing.T, change ...func(*gomysql.Config) error) *sql.Conn {
	t.Helper()
	conn, err := c.openErr(t, change...)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// openErr is open returning the error of a session the server refuses.
func (c *myClient) openErr(t *testing.T, change ...func(*gomysql.Config) error) (*sql.Conn, error) {
	t.Helper()
	cfg := c.cfg.Clone()
	for _, ch := range change {
		if err := ch(cfg); err != nil {
			t.Fatal(err)
		}
	}
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(myCtx(t))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return conn, nil
}

// myErr is how an error is observed: the server's number, SQLSTATE and
// message when it is one.
func myErr(err error) string {
	if err == nil {
		return "ok"
	}
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return fmt.Sprintf("error %d %s %q", me.Number, string(me.SQLState[:]), me.Message)
	}
	// The client's own errors are compared by their text, with the
	// address it dialled taken out.
	return "client error " + addrText.ReplaceAllString(err.Error(), "<addr>")
}

// myValue shows a value with its Go type; bytes as text.
func myValue(v any) string {
	if b, ok := v.([]byte); ok {
		if len(b) > 200 {
			sum := sha256.Sum256(b)
			return fmt.Sprintf("[]byte(%d bytes sha256:%s)", len(b), hex.EncodeToString(sum[:8]))
		}
		return fmt.Sprintf("[]byte=%q", b)
	}
	if v == nil {
		return "NULL"
	}
	return fmt.Sprintf("%T=%v", v, v)
}

// myRows observes every result set of rows: columns with their types,
// values, and the error.
func myRows(o *obs, rows *sql.Rows) {
	for set := 1; ; set++ {
		cts, err := rows.ColumnTypes()
		if err != nil {
			o.add("columns: %s", myErr(err))
			break
		}
		var cols []string
		for _, ct := range cts {
			nullable, _ := ct.Nullable()
			length, _ := ct.Length()
			prec, scale, _ := ct.DecimalSize()
			cols = append(cols, fmt.Sprintf("%s:%s:%v:%d:%d.%d:%v", ct.Name(), ct.DatabaseTypeName(), nullable, length, prec, scale, ct.ScanType()))
		}
		o.add("set %d columns %s", set, strings.Join(cols, " "))
		n := 0
		for rows.Next() {
			vals := make([]any, len(cts))
			ptrs := make([]any, len(cts))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				o.add("scan: %s", myErr(err))
				continue
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				parts[i] = myValue(v)
			}
			o.add("row %s", strings.Join(parts, " | "))
			n++
		}
		o.add("set %d: %d rows %s", set, n, myErr(rows.Err()))
		if !rows.NextResultSet() {
			break
		}
	}
	o.add("end %s", myErr(rows.Err()))
	rows.Close()
}

func myQuery(t *testing.T, conn *sql.Conn, o *obs, q string, args ...any) {
	t.Helper()
	o.add("query %.100s %d args", q, len(args))
	rows, err := conn.QueryContext(myCtx(t), q, args...)
	if err != nil {
		o.add("query: %s", myErr(err))
		return
	}
	myRows(o, rows)
}

func myExec(t *testing.T, conn *sql.Conn, o *obs, q string, args ...any) {
	t.Helper()
	res, err := conn.ExecContext(myCtx(t), q, args...)
	if err != nil {
		o.add("exec %.100s: %s", q, myErr(err))
		return
	}
	n, err1 := res.RowsAffected()
	id, err2 := res.LastInsertId()
	o.add("exec %.100s: affected %d %v insert id %d %v", q, n, err1, id, err2)
}

// myTypes is a table with a column of every common type.
const myTypes = `CREATE TEMPORARY TABLE ty (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  de DECIMAL(30,6), fl FLOAT, db DOUBLE,
  d DATE, dt DATETIME(6), tm TIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR,
  ch CHAR(10), vc VARCHAR(100), tx TEXT, bl BLOB, vb VARBINARY(20), js JSON,
  en ENUM('red','green','blue'), st SET('x','y','z'), bt BIT(10)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`

const myTypeCols = "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, de, fl, db, d, dt, tm, ts, yr, ch, vc, tx, bl, vb, js, en, st, bt"

// myTypeRows are the same rows as literals (text protocol) and as
// arguments (binary protocol).
func myTypeRows() (literals []string, args [][]any) {
	literals = []string{
		"(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, " +
			"-123456789012345678.123456, 1.5, 3.141592653589793, '2024-02-29', '2024-02-29 13:14:15.123456', '-838:59:59.000000', " +
			"'2038-01-19 03:14:07.999999', 2155, 'char', 'vär chär', 'text é', x'00ff10', x'cafe', '{\"a\": [1, null]}', 'green', 'x,z', b'1010101010')",
		"(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
		"(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '1000-01-01', '1000-01-01 00:00:00', '00:00:00', '1970-01-01 00:00:01', 1901, '', '', '', '', '', '[]', 'red', '', b'0')",
	}
	ts := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)
	args = [][]any{
		{11, int8(-128), uint8(255), int16(-32768), uint16(65535), -8388608, 16777215, int32(-2147483648), uint32(4294967295),
			int64(-9223372036854775808), uint64(18446744073709551615), "-123456789012345678.123456", float32(1.5), 3.141592653589793,
			"2024-02-29", ts, "-838:59:59.000000", "2038-01-19 03:14:07.999999", 2155, "char", "vär chär", "text é",
			[]byte{0, 0xff, 0x10}, []byte{0xca, 0xfe}, `{"a": [1, null]}`, "green", "x,z", []byte{0x02, 0xaa}},
		{12, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil},
		{13, true, false, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), "1000-01-01 00:00:00", "00:00:00",
			"1970-01-01 00:00:01", 1901, "", "", "", []byte{}, []byte{}, "[]", "red", "", []byte{0}},
	}
	return literals, args
}

// myFeatures is the MariaDB table.
var myFeatures = []feature[*myClient]{
	{"text protocol types", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myExec(t, conn, o, myTypes)
		lits, _ := myTypeRows()
		for _, l := range lits {
			myExec(t, conn, o, "INSERT INTO ty ("+myTypeCols+") VALUES "+l)
		}
		// No arguments: the text protocol (COM_QUERY).
		myQuery(t, conn, o, "SELECT "+myTypeCols+" FROM ty ORDER BY id")
		myQuery(t, conn, o, "SELECT 1, 2.5, 'x', NULL, CAST(1 AS UNSIGNED), 1e300, X'00', DATE '2024-01-01', TIME '01:02:03.5', NOW() > '2000-01-01'")
		myQuery(t, conn, o, "SELECT nope FROM ty")
		myQuery(t, conn, o, "SELEC 1")
		myQuery(t, conn, o, "SELECT * FROM no_such_table")
		myExec(t, conn, o, "INSERT INTO ty (id) VALUES (1)")
		// An error after rows were sent.
		midway := "SELECT seq FROM seq_1_to_100000 WHERE seq < IF(seq = 90000, (SELECT 1 UNION SELECT 2), 100000)"
		for _, args := range [][]any{nil, {0}} {
			q := midway
			if args != nil {
				q += " AND seq > ?"
			}
			var sub obs
			myQuery(t, conn, &sub, q, args...)
			d := newDigest()
			d.add(sub.lines...)
			o.add("error after rows, %d args: %s, ending %q", len(args), d, sub.lines[max(0, len(sub.lines)-2):])
		}
		o.add("ping %s", myErr(conn.PingContext(myCtx(t))))
		// Arguments put into the text by the driver: still COM_QUERY.
		inline := c.open(t, func(cfg *gomysql.Config) error { cfg.InterpolateParams = true; return nil })
		myQuery(t, inline, o, "SELECT ?, ?, ?, ?, ?", 42, "it's", []byte{0, 0x27, 0xff}, nil, time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
		// A statement of 4 MB.
		myQuery(t, conn, o, "SELECT LENGTH('"+strings.Repeat("long statement ", 280000)+"') AS n")
	}, []string{"ping ok", "\"it's\"", "error 1242", "uint64=18446744073709551615", "1062"}},
	{"binary protocol types", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myExec(t, conn, o, myTypes)
		_, args := myTypeRows()
		marks := strings.TrimSuffix(strings.Repeat("?, ", 28), ", ")
		for _, a := range args {
			// Arguments: a prepared statement (COM_STMT_PREPARE and
			// COM_STMT_EXECUTE) with the binary protocol.
			myExec(t, conn, o, "INSERT INTO ty ("+myTypeCols+") VALUES ("+marks+")", a...)
		}
		myQuery(t, conn, o, "SELECT "+myTypeCols+" FROM ty WHERE id > ? ORDER BY id", 0)
		myQuery(t, conn, o, "SELECT ?, ?, ?, ?, ?, ?, ?", 1, 2.5, "x", nil, []byte{0, 1}, true, time.Date(2024, 1, 2, 3, 4, 5, 600000000, time.UTC))
		myQuery(t, conn, o, "SELECT nope FROM ty WHERE id = ?", 1)
		myQuery(t, conn, o, "SELECT * FROM ty WHERE id = ? AND", 1)
		myExec(t, conn, o, "INSERT INTO ty (id) VALUES (?)", 11)
		// A statement prepared once and run again.
		st, err := conn.PrepareContext(myCtx(t), "SELECT id, vc, de FROM ty WHERE id = ?")
		if err != nil {
			o.add("prepare: %s", myErr(err))
			return
		}
		defer st.Close()
		for _, id := range []int{11, 12, 13, 99} {
			rows, err := st.QueryContext(myCtx(t), id)
			if err != nil {
				o.add("execute: %s", myErr(err))
				continue
			}
			myRows(o, rows)
		}
	}, []string{"3 rows ok", "1062"}},
	{"wide result 5000 columns", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		var sel []string
		for i := range 5000 {
			switch i % 3 {
			case 0:
				sel = append(sel, fmt.Sprintf("%d AS c%d", i, i))
			case 1:
				sel = append(sel, fmt.Sprintf("'v%d' AS c%d", i, i))
			default:
				sel = append(sel, fmt.Sprintf("NULL AS c%d", i))
			}
		}
		q := "SELECT " + strings.Join(sel, ", ")
		for _, args := range [][]any{nil, {1}} {
			text := q
			if args != nil {
				text += " FROM DUAL WHERE 1 = ?"
			}
			rows, err := conn.QueryContext(myCtx(t), text, args...)
			if err != nil {
				o.add("query: %s", myErr(err))
				continue
			}
			var sub obs
			myRows(&sub, rows)
			d := newDigest()
			d.add(sub.lines...)
			o.add("%d args: %s", len(args), d)
		}
		// And 3,000 parameters of one prepared statement.
		var marks []string
		var args []any
		for i := range 3000 {
			marks = append(marks, "?")
			switch i % 4 {
			case 0:
				args = append(args, i)
			case 1:
				args = append(args, fmt.Sprintf("p%d", i))
			case 2:
				args = append(args, nil)
			default:
				args = append(args, float64(i)/8)
			}
		}
		rows, err := conn.QueryContext(myCtx(t), "SELECT "+strings.Join(marks, ", "), args...)
		if err != nil {
			o.add("3000 parameters: %s", myErr(err))
		} else {
			var sub obs
			myRows(&sub, rows)
			d := newDigest()
			d.add(sub.lines...)
			o.add("3000 parameters: %s", d)
		}
	}, []string{"0 args: 1 items", "1 args: 1 items", "3000 parameters: 1 items"}},
	{"large result 20MB value", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		const n = 20 << 20
		myQuery(t, conn, o, "SELECT REPEAT('x', 20971520) AS big, 1 AS after")
		myQuery(t, conn, o, "SELECT REPEAT(?, ?) AS big, 2 AS after", "ab", n/2)
		myExec(t, conn, o, "CREATE TEMPORARY TABLE lb (id INT PRIMARY KEY, b LONGBLOB)")
		big := make([]byte, n)
		for i := range big {
			big[i] = byte(i * 7)
		}
		// 20 MB the other way: a parameter split over several packets.
		myExec(t, conn, o, "INSERT INTO lb VALUES (?, ?)", 1, big)
		myQuery(t, conn, o, "SELECT LENGTH(b), MD5(b) FROM lb")
		myQuery(t, conn, o, "SELECT b FROM lb WHERE id = ?", 1)
		myQuery(t, conn, o, "SELECT seq, MD5(seq) FROM seq_1_to_100000 WHERE seq % 10000 = 0 OR seq < 3")
		rows, err := conn.QueryContext(myCtx(t), "SELECT seq, REPEAT('r', seq % 100) FROM seq_1_to_100000")
		if err == nil {
			var sub obs
			myRows(&sub, rows)
			d := newDigest()
			d.add(sub.lines...)
			o.add("100,000 rows: %s", d)
		} else {
			o.add("query: %s", myErr(err))
		}
	}, []string{"20971520 bytes", "int64=20971520"}},
	{"multi-statements", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myQuery(t, conn, o, "SELECT 1 AS a; SELECT 'x' AS b, NULL AS c; CREATE TEMPORARY TABLE ms (i INT); INSERT INTO ms VALUES (1), (2); UPDATE ms SET i = i + 10; SELECT * FROM ms ORDER BY i")
		myQuery(t, conn, o, "SELECT 1; SELECT nope; SELECT 'never'")
		myExec(t, conn, o, "INSERT INTO ms VALUES (3); INSERT INTO ms VALUES (4), (5)")
		myExec(t, conn, o, "INSERT INTO ms VALUES (6); INSERT INTO nope VALUES (1); INSERT INTO ms VALUES (7)")
		myQuery(t, conn, o, "SELECT COUNT(*) FROM ms; DO 1; SELECT SUM(i) FROM ms")
	}, []string{"set 3: 2 rows ok", "1146"}},
	{"LOAD DATA LOCAL INFILE", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myExec(t, conn, o, "CREATE TEMPORARY TABLE ld (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), at DATETIME)")
		load := "LOAD DATA LOCAL INFILE '" + c.infile + "' INTO TABLE ld FIELDS TERMINATED BY ','"
		myExec(t, conn, o, load)
		myQuery(t, conn, o, "SHOW WARNINGS")
		myQuery(t, conn, o, "SELECT COUNT(*), SUM(amount), MD5(GROUP_CONCAT(id, name, at ORDER BY id)) FROM ld")
		// Again: every row a duplicate, ignored with warnings.
		myExec(t, conn, o, "LOAD DATA LOCAL INFILE '"+c.infile+"' IGNORE INTO TABLE ld FIELDS TERMINATED BY ','")
		myQuery(t, conn, o, "SELECT @@warning_count")
		myExec(t, conn, o, "LOAD DATA LOCAL INFILE '/nonexistent/compat.csv' INTO TABLE ld")
		myQuery(t, conn, o, "SELECT COUNT(*) FROM ld")
	}, []string{"affected 5001", "int64=5001"}},
	{"session variables", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		var id int64
		err := conn.QueryRowContext(myCtx(t), "SELECT CONNECTION_ID()").Scan(&id)
		// The connection id is the server's count of connections, which
		// differs between the two runs: only that there is one is compared.
		o.add("connection id > 0: %v %s", id > 0, myErr(err))
		myQuery(t, conn, o, "SELECT DATABASE(), CURRENT_USER(), USER(), @@autocommit, @@sql_mode, @@time_zone, @@character_set_client, @@collation_connection, @@max_allowed_packet, @@tx_isolation")
		myExec(t, conn, o, "SET @u = 5, @s = 'str'")
		myQuery(t, conn, o, "SELECT @u, @s, @nothing")
		myExec(t, conn, o, "SET SESSION sql_mode = 'ANSI_QUOTES,NO_ZERO_DATE', time_zone = '+05:30', autocommit = 0")
		myQuery(t, conn, o, "SELECT @@session.sql_mode, @@time_zone, @@autocommit, FROM_UNIXTIME(0)")
		myExec(t, conn, o, "SET NAMES latin1")
		myQuery(t, conn, o, "SELECT @@character_set_client, 'é', HEX('é')")
		myExec(t, conn, o, "SET NAMES utf8mb4")
		myExec(t, conn, o, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
		myQuery(t, conn, o, "SELECT @@tx_isolation")
		myExec(t, conn, o, "SET SESSION nope_no_such_variable = 1")
		myExec(t, conn, o, "USE test")
		myQuery(t, conn, o, "SHOW SESSION VARIABLES LIKE 'sql_mode'")
		// The server's side of TLS with its peer (the client or the
		// agent).
		myQuery(t, conn, o, "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher', 'Compression')")
	}, []string{"+05:30", "SERIALIZABLE", "TLSv1.3"}},
	{"handshake options", func(t *testing.T, c *myClient, o *obs) {
		// The collation asked in the handshake.
		latin := c.open(t, func(cfg *gomysql.Config) error { cfg.Collation = "latin1_swedish_ci"; return nil })
		myQuery(t, latin, o, "SELECT @@collation_connection, @@character_set_client, @@character_set_results")
		// CLIENT_FOUND_ROWS: an UPDATE counts the rows it matched, not
		// the rows it changed.
		for _, found := range []bool{false, true} {
			conn := c.open(t, func(cfg *gomysql.Config) error { cfg.ClientFoundRows = found; return nil })
			myExec(t, conn, o, "CREATE TEMPORARY TABLE fr (id INT PRIMARY KEY, v INT)")
			myExec(t, conn, o, "INSERT INTO fr VALUES (1, 1), (2, 2)")
			o.add("client found rows %v", found)
			myExec(t, conn, o, "UPDATE fr SET v = 1")
		}
		// No database, then one the user may not use (1044, as MariaDB
		// says of a database that does not exist to whoever lacks rights).
		none := c.open(t, func(cfg *gomysql.Config) error { cfg.DBName = ""; return nil })
		myQuery(t, none, o, "SELECT DATABASE()")
		_, err := c.openErr(t, func(cfg *gomysql.Config) error { cfg.DBName = "compat_no_such_db"; return nil })
		o.add("unknown database: %s", myErr(err))
		// Session variables the driver sets after the handshake.
		vars := c.open(t, func(cfg *gomysql.Config) error {
			cfg.Params = map[string]string{"autocommit": "0", "sql_mode": "'ANSI'"}
			return nil
		})
		myQuery(t, vars, o, "SELECT @@autocommit, @@sql_mode")
	}, []string{"latin1_swedish_ci", "client found rows true", "1044"}},
	{"compression", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t, func(cfg *gomysql.Config) error { return cfg.Apply(gomysql.EnableCompression(true)) })
		myQuery(t, conn, o, "SHOW SESSION STATUS LIKE 'Compression'")
		myExec(t, conn, o, "CREATE TEMPORARY TABLE z (id INT PRIMARY KEY, body LONGTEXT)")
		for i := range 20 {
			myExec(t, conn, o, "INSERT INTO z VALUES (?, REPEAT(?, ?))", i, "compress me ", 1000*(i+1))
		}
		myQuery(t, conn, o, "SELECT id, LENGTH(body), MD5(body) FROM z ORDER BY id")
		myQuery(t, conn, o, "SELECT body FROM z WHERE id = ?", 19)
		myQuery(t, conn, o, "SELECT REPEAT('z', 5000000)")
		// Past 16 MB a packet is split, and compressed packets carry the
		// pieces.
		myQuery(t, conn, o, "SELECT REPEAT('z', 20971520)")
		big := make([]byte, 17<<20)
		for i := range big {
			big[i] = byte('a' + i%26)
		}
		myExec(t, conn, o, "INSERT INTO z VALUES (?, ?)", 100, big)
		myQuery(t, conn, o, "SELECT LENGTH(body), MD5(body) FROM z WHERE id = 100")
		myExec(t, conn, o, "CREATE TEMPORARY TABLE zl (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), at DATETIME)")
		myExec(t, conn, o, "LOAD DATA LOCAL INFILE '"+c.infile+"' INTO TABLE zl FIELDS TERMINATED BY ','")
		myQuery(t, conn, o, "SELECT COUNT(*), MD5(GROUP_CONCAT(id, name, at ORDER BY id)) FROM zl")
		myQuery(t, conn, o, "SELECT 1; SELECT nope")
		myQuery(t, conn, o, "SELECT seq FROM seq_1_to_20000 WHERE seq % 5000 = 0")
	}, []string{"[]byte=\"Compression\" | []byte=\"ON\"", "1054", "int64=17825792", "affected 5001"}},
	{"transactions with errors", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myExec(t, conn, o, "CREATE TEMPORARY TABLE tx (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB")
		myExec(t, conn, o, "BEGIN")
		myExec(t, conn, o, "INSERT INTO tx VALUES (1, 'a')")
		myExec(t, conn, o, "INSERT INTO tx VALUES (1, 'dup')")
		myExec(t, conn, o, "INSERT INTO tx VALUES (?, ?)", 1, "dup")
		myQuery(t, conn, o, "SELECT @@in_transaction, COUNT(*) FROM tx")
		myExec(t, conn, o, "ROLLBACK")
		myQuery(t, conn, o, "SELECT @@in_transaction, COUNT(*) FROM tx")
		myExec(t, conn, o, "START TRANSACTION")
		myExec(t, conn, o, "INSERT INTO tx VALUES (2, 'b')")
		myExec(t, conn, o, "SAVEPOINT s1")
		myExec(t, conn, o, "INSERT INTO tx VALUES (3, 'c')")
		myExec(t, conn, o, "INSERT INTO tx VALUES (2, 'dup')")
		myExec(t, conn, o, "ROLLBACK TO SAVEPOINT s1")
		myExec(t, conn, o, "RELEASE SAVEPOINT s1")
		myExec(t, conn, o, "ROLLBACK TO SAVEPOINT s1")
		myExec(t, conn, o, "COMMIT")
		myQuery(t, conn, o, "SELECT * FROM tx ORDER BY id")
		tx, err := conn.BeginTx(myCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.ExecContext(myCtx(t), "INSERT INTO tx VALUES (?, ?)", 2, "dup")
		o.add("sql.Tx insert: %s", myErr(err))
		_, err = tx.ExecContext(myCtx(t), "INSERT INTO tx VALUES (?, ?)", 4, "d")
		o.add("sql.Tx insert: %s", myErr(err))
		o.add("sql.Tx rollback: %s", myErr(tx.Rollback()))
		myQuery(t, conn, o, "SELECT COUNT(*) FROM tx")
	}, []string{"1062", "sql.Tx rollback: ok"}},
	{"warnings", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myExec(t, conn, o, "CREATE TEMPORARY TABLE w (c CHAR(3), n TINYINT, d DATE)")
		myExec(t, conn, o, "SET SESSION sql_mode = ''")
		myExec(t, conn, o, "INSERT INTO w VALUES ('abcdef', 1000, '2024-02-30')")
		myQuery(t, conn, o, "SHOW WARNINGS")
		myQuery(t, conn, o, "SELECT @@warning_count")
		myExec(t, conn, o, "INSERT INTO w VALUES (?, ?, ?)", "ghijkl", -1000, "nonsense")
		myQuery(t, conn, o, "SHOW WARNINGS")
		myQuery(t, conn, o, "SELECT 1/0, CAST('12abc' AS INT)")
		myQuery(t, conn, o, "SHOW WARNINGS")
		myQuery(t, conn, o, "SHOW COUNT(*) WARNINGS")
		myExec(t, conn, o, "SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
		myExec(t, conn, o, "INSERT INTO w VALUES ('abcdef', 1, NULL)")
		myQuery(t, conn, o, "SHOW ERRORS")
		myQuery(t, conn, o, "SELECT * FROM w")
	}, []string{"1265", "1406"}},
	{"stored procedure results", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myQuery(t, conn, o, "CALL test.multi(5)")
		myQuery(t, conn, o, "CALL test.multi(?)", 7)
		myExec(t, conn, o, "CALL test.multi(1)")
		myQuery(t, conn, o, "CALL test.nope()")
		myQuery(t, conn, o, "SELECT 'after'")
	}, []string{"set 3: 3 rows ok", "1305"}},
	{"KILL QUERY and KILL", func(t *testing.T, c *myClient, o *obs) {
		victim, killer := c.open(t), c.open(t)
		var id int64
		if err := victim.QueryRowContext(myCtx(t), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			waitSleeping(t, c.admin, "SELECT SLEEP(30) AS slept")
			// The id the client read is the server's, so another session
			// may stop its statement.
			// The statement holds the id, which differs between the runs:
			// only its outcome is compared.
			var sub obs
			myExec(t, killer, &sub, fmt.Sprintf("KILL QUERY %d", id))
			for _, l := range sub.lines {
				o.add("%s", strings.Replace(l, fmt.Sprint(id), "<victim id>", 1))
			}
		}()
		rows, err := victim.QueryContext(myCtx(t), "SELECT SLEEP(30) AS slept")
		<-done
		if err != nil {
			o.add("sleep: %s", myErr(err))
		} else {
			myRows(o, rows)
		}
		myQuery(t, victim, o, "SELECT 'victim lives'")
		myExec(t, killer, o, "KILL QUERY 999999")

		// KILL of the whole connection: the victim's next statement learns
		// it.
		var sub obs
		myExec(t, killer, &sub, fmt.Sprintf("KILL %d", id))
		for _, l := range sub.lines {
			o.add("%s", strings.Replace(l, fmt.Sprint(id), "<victim id>", 1))
		}
		waitGone(t, c.admin, id)
		myQuery(t, victim, o, "SELECT 'after kill'")
		myQuery(t, killer, o, "SELECT 'killer lives'")
	}, []string{"1317", "victim lives", "1094", "killer lives", "invalid connection"}},
	{"server timeouts", func(t *testing.T, c *myClient, o *obs) {
		conn := c.open(t)
		myExec(t, conn, o, "SET SESSION max_statement_time = 0.2")
		myQuery(t, conn, o, "SELECT SLEEP(5) AS slept")
		myQuery(t, conn, o, "SELECT 'after the timeout'")
		// The server drops a session idle for longer than wait_timeout.
		myExec(t, conn, o, "SET SESSION wait_timeout = 1")
		var id int64
		if err := conn.QueryRowContext(myCtx(t), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		waitGone(t, c.admin, id)
		// On a session the application holds (sql.Conn, a transaction)
		// the driver tells apart a connection it could not write to
		// (driver.ErrBadConn) from one that broke after it wrote
		// ("invalid connection").
		myQuery(t, conn, o, "SELECT 'after wait_timeout'")

		// From a pool, database/sql checks the connection out, finds it
		// dead and takes a new one: the statement succeeds.
		db := c.pool(t)
		if _, err := db.ExecContext(myCtx(t), "SET SESSION wait_timeout = 1"); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(myCtx(t), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		waitGone(t, c.admin, id)
		var got string
		err := db.QueryRowContext(myCtx(t), "SELECT 'pooled after wait_timeout'").Scan(&got)
		o.add("pooled: %q %s", got, myErr(err))
	}, []string{"after the timeout", "driver: bad connection", "pooled after wait_timeout"}},
}

// waitGone waits until a connection left the processlist.
func waitGone(t *testing.T, adminDSN string, id int64) {
	admin, err := sql.Open("mysql", adminDSN)
	if err != nil {
		t.Error(err)
		return
	}
	defer admin.Close()
	ctx := myCtx(t)
	for ctx.Err() == nil {
		var n int
		if err := admin.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?", id).Scan(&n); err != nil {
			t.Error(err)
			return
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSleeping waits until a statement runs in the database.
func waitSleeping(t *testing.T, adminDSN, q string) {
	admin, err := sql.Open("mysql", adminDSN)
	if err != nil {
		t.Error(err)
		return
	}
	defer admin.Close()
	ctx := myCtx(t)
	for ctx.Err() == nil {
		var n int
		if err := admin.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE info = ?", q).Scan(&n); err != nil {
			t.Error(err)
			return
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
