package compat

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// pgClient reaches one PostgreSQL target with pgx.
type pgClient struct {
	cfg   *pgx.ConnConfig
	admin string // the harness's superuser, to watch pg_stat_activity
}

// pgWorld is a PostgreSQL 15 and an agent in front of it, and the two
// ways pgx reaches it.
func pgWorld(t *testing.T) []target[*pgClient] {
	a := newAuthority(t, "localhost", "pg1")
	pg := harness.PostgresWith(t, harness.PostgresOptions{TLS: a.dbTLS(t), Users: []string{dbUser}})
	addr, _ := a.serveAgent(t, config.Database{Name: "pg1", Protocol: "postgres", URI: pg.Addr(),
		TLS: config.DatabaseTLS{Mode: "verify-full", CACertFile: pg.ServerCAFile}},
		postgres.New(postgres.Options{Logger: quiet()}), nil)

	direct, err := pgx.ParseConfig(pg.DSN(t, dbUser))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	through, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=disable", host, port, dbUser))
	if err != nil {
		t.Fatal(err)
	}
	// The agent's port takes SSLRequest then TLS with the user's
	// certificate; the name picks the database.
	through.TLSConfig = a.clientTLS("pg1")
	return []target[*pgClient]{
		{name: "direct", client: &pgClient{cfg: direct, admin: pg.AdminDSN()}},
		{name: "agent", client: &pgClient{cfg: through, admin: pg.AdminDSN()}},
	}
}

func pgCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a connection whose notices are observed in o, in the
// order they arrive among the other observations.
func (c *pgClient) connect(t *testing.T, o *obs) *pgx.Conn {
	t.Helper()
	conn, err := c.connectWith(t, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// connectWith is connect with the configuration changed first, returning
// the error of a connection the server refuses.
func (c *pgClient) connectWith(t *testing.T, o *obs, change func(*pgx.ConnConfig)) (*pgx.Conn, error) {
	t.Helper()
	cfg := c.cfg.Copy()
	if change != nil {
		change(cfg)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		o.add("notice %s %s %q detail=%q hint=%q where=%q", n.Severity, n.Code, n.Message, n.Detail, n.Hint, n.Where)
	}
	// A cancelled context sends a cancel request at once and leaves the
	// server time to answer it (the default gives up after one second and
	// closes the connection, which on this loaded machine would make the
	// outcome a race instead of the server's answer).
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 20 * time.Second}
	}
	conn, err := pgx.ConnectConfig(pgCtx(t), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn, nil
}

// pgErr is how an error is observed: the server's fields when it is one.
func pgErr(err error) string {
	if err == nil {
		return "ok"
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Sprintf("error %s %s %q detail=%q hint=%q pos=%d where=%q table=%q column=%q constraint=%q",
			pe.Severity, pe.Code, pe.Message, pe.Detail, pe.Hint, pe.Position, pe.Where, pe.TableName, pe.ColumnName, pe.ConstraintName)
	}
	// The client's own errors are compared by their text, with the
	// address it dialled taken out (the two targets listen on different
	// ports).
	return "client error " + addrText.ReplaceAllString(err.Error(), "<addr>")
}

var addrText = regexp.MustCompile(`127\.0\.0\.1:\d+|\[::1\]:\d+`)

// rowsObs observes a result: columns (name, type OID, format), every row's
// values with their Go types, the command tag and the error.
func rowsObs(o *obs, rows pgx.Rows) {
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, fmt.Sprintf("%s:%d:%d", f.Name, f.DataTypeOID, f.Format))
	}
	o.add("columns %s", strings.Join(cols, " "))
	n := 0
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			o.add("values: %s", pgErr(err))
			continue
		}
		o.add("row %s", values(vals))
		n++
	}
	rows.Close()
	o.add("rows %d tag %q %s", n, rows.CommandTag().String(), pgErr(rows.Err()))
}

func values(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = fmt.Sprintf("%T=%v", v, v)
	}
	return strings.Join(parts, " | ")
}

func query(t *testing.T, conn *pgx.Conn, o *obs, sql string, args ...any) {
	t.Helper()
	o.add("query %.80s", sql)
	rows, err := conn.Query(pgCtx(t), sql, args...)
	if err != nil {
		o.add("query: %s", pgErr(err))
		return
	}
	rowsObs(o, rows)
}

func exec(t *testing.T, conn *pgx.Conn, o *obs, sql string, args ...any) {
	t.Helper()
	tag, err := conn.Exec(pgCtx(t), sql, args...)
	o.add("exec %.80s: tag %q %s", sql, tag.String(), pgErr(err))
}

// allTypes is one value of every common parameter type, with the cast
// that fixes the type on the server, and NULLs.
func allTypes() (string, []any) {
	var num pgtype.Numeric
	_ = num.Scan("-12345.678900")
	ts := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)
	casts := []string{"int2", "int4", "int8", "float4", "float8", "numeric", "text", "bytea", "bool",
		"date", "timestamp", "timestamptz", "interval", "uuid", "json", "jsonb", "int4[]", "text[]", "float8[]",
		"int4", "text", "timestamptz", "jsonb", "int8[]"}
	args := []any{int16(-32768), int32(math.MaxInt32), int64(math.MinInt64), float32(1.5), math.Pi, num, "héllo, wörld 'q'",
		[]byte{0, 1, 2, 0xfe, 0xff}, true,
		time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), ts, ts.Add(-90 * time.Minute),
		pgtype.Interval{Months: 14, Days: 3, Microseconds: 3723000004, Valid: true},
		pgtype.UUID{Bytes: [16]byte{0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00}, Valid: true},
		// JSON goes as its text: pgx cannot put a Go map in the text
		// format without knowing the type.
		`{"a": 1, "b": ["x", null]}`, `{"n": 2.5, "k": "v"}`,
		[]int32{1, 2, 3}, []string{"a", "b c", `"q"`, ""}, []float64{0.5, -1e300},
		nil, nil, nil, nil, []*int64{nil, ptr(int64(7))}}
	var sel []string
	for i, c := range casts {
		sel = append(sel, fmt.Sprintf("$%d::%s", i+1, c))
	}
	return "select " + strings.Join(sel, ", "), args
}

func ptr[T any](v T) *T { return &v }

// pgFeatures is the PostgreSQL table.
var pgFeatures = []feature[*pgClient]{
	{"simple query", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		mode := pgx.QueryExecModeSimpleProtocol
		query(t, conn, o, "select 1 as one, 'two'::text, 3.5::numeric, true, null::int, now() > '2000-01-01' as later, '{1,2}'::int[]", mode)
		query(t, conn, o, "select * from generate_series(1, 3) g where g > 5", mode)
		query(t, conn, o, "select nope", mode)
		exec(t, conn, o, "create temp table s (id int, v text)")
		exec(t, conn, o, "insert into s values (1, 'a'), (2, 'b')")
		exec(t, conn, o, "update s set v = v || 'x'")
		exec(t, conn, o, "delete from s where id = 1")
		exec(t, conn, o, "")
		exec(t, conn, o, "-- only a comment")
		exec(t, conn, o, ";")
		// A statement of 4 MB.
		query(t, conn, o, "select length('"+strings.Repeat("long statement ", 280000)+"') as n", mode)
	}, []string{"int32=4200000", "tag \"DELETE 1\"", "42703"}},
	{"extended query", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		query(t, conn, o, "select $1::int + 1 as n, $2::text || 'x' as s", 41, "y")
		query(t, conn, o, "select g from generate_series(1, $1::int) g", 5)
		query(t, conn, o, "select $1::int / 0", 1)
		exec(t, conn, o, "create temp table e (id int primary key, v text)")
		exec(t, conn, o, "insert into e values ($1, $2), ($3, $4)", 1, "a", 2, nil)
		exec(t, conn, o, "update e set v = $1 where id > $2", "z", 0)
		query(t, conn, o, "select * from e order by id")
		query(t, conn, o, "select * from e where id = $1", "not a number")
		// Describe without executing: what the server says of a statement.
		sd, err := conn.Prepare(pgCtx(t), "named", "select id, v, $1::numeric as p from e where id = $2")
		if err != nil {
			o.add("prepare: %s", pgErr(err))
		} else {
			var f []string
			for _, fd := range sd.Fields {
				f = append(f, fmt.Sprintf("%s:%d", fd.Name, fd.DataTypeOID))
			}
			o.add("prepared params %v fields %s", sd.ParamOIDs, strings.Join(f, " "))
			query(t, conn, o, "named", "1.50", 1)
		}
		// Close of a named statement, as a protocol message.
		o.add("deallocate %s", pgErr(conn.Deallocate(pgCtx(t), "named")))
		// Once closed, the name is no statement: pgx sends it as SQL.
		query(t, conn, o, "named", "1.50", 1)
	}, []string{"tag \"UPDATE 2\"", "22P02", "prepared params [1700 23]"}},
	{"parameters binary", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		sql, args := allTypes()
		// The cached statement is described first, so every parameter and
		// result of a known type goes in binary.
		query(t, conn, o, sql, append([]any{pgx.QueryExecModeCacheStatement}, args...)...)
		query(t, conn, o, sql, append([]any{pgx.QueryExecModeDescribeExec}, args...)...)
	}, []string{"int16=-32768", "pgtype.Interval"}},
	{"parameters text", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		sql, args := allTypes()
		// Exec mode sends every parameter as text, without describing.
		query(t, conn, o, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
		// Simple protocol: the client puts the values in the text itself.
		query(t, conn, o, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
	}, []string{"int16=-32768", "pgtype.Interval"}},
	{"binary results", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		// The raw bytes of each value in the binary format, as pgconn
		// receives them.
		sql := "select 1::int2, 2::int4, 3::int8, 1.25::float4, 2.5::float8, 123.456::numeric, 'txt'::text, '\\x00ff'::bytea, true, " +
			"'2024-02-29'::date, '2024-02-29 01:02:03.456789'::timestamp, '2024-02-29 01:02:03.456789+00'::timestamptz, '1 year 2 days 00:00:03'::interval, " +
			"'123e4567-e89b-12d3-a456-426614174000'::uuid, '{\"a\":1}'::jsonb, '{1,NULL,3}'::int4[], null::text, $1::bytea"
		formats := make([]int16, 18)
		for i := range formats {
			formats[i] = 1
		}
		rr := conn.PgConn().ExecParams(pgCtx(t), sql, [][]byte{{1, 2, 3}}, []uint32{17}, []int16{1}, formats)
		res := rr.Read()
		var cols []string
		for _, f := range res.FieldDescriptions {
			cols = append(cols, fmt.Sprintf("%s:%d:%d:%d:%d", f.Name, f.DataTypeOID, f.DataTypeSize, f.TypeModifier, f.Format))
		}
		o.add("columns %s", strings.Join(cols, " "))
		for _, row := range res.Rows {
			var vs []string
			for _, v := range row {
				if v == nil {
					vs = append(vs, "NULL")
				} else {
					vs = append(vs, hex.EncodeToString(v))
				}
			}
			o.add("row %s", strings.Join(vs, " "))
		}
		o.add("tag %q %s", res.CommandTag.String(), pgErr(res.Err))
	}, []string{"tag \"SELECT 1\" ok"}},
	{"wide result 1600 columns", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		var sel []string
		for i := range 1600 {
			switch i % 4 {
			case 0:
				sel = append(sel, fmt.Sprintf("%d as c%d", i, i))
			case 1:
				sel = append(sel, fmt.Sprintf("'v%d'::text as c%d", i, i))
			case 2:
				sel = append(sel, fmt.Sprintf("(%d %% 3 = 0) as c%d", i, i))
			default:
				sel = append(sel, fmt.Sprintf("null::numeric as c%d", i))
			}
		}
		sql := "select " + strings.Join(sel, ", ")
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			rows, err := conn.Query(pgCtx(t), sql, mode)
			if err != nil {
				o.add("query: %s", pgErr(err))
				continue
			}
			d := newDigest()
			for _, f := range rows.FieldDescriptions() {
				d.add(f.Name, fmt.Sprint(f.DataTypeOID, f.Format))
			}
			for rows.Next() {
				vals, _ := rows.Values()
				d.add(values(vals))
			}
			rows.Close()
			o.add("mode %v: %d columns, %s, tag %q %s", mode, len(rows.FieldDescriptions()), d, rows.CommandTag(), pgErr(rows.Err()))
		}
	}, []string{"1600 columns"}},
	{"large result 10MB row", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			var s string
			var b []byte
			err := conn.QueryRow(pgCtx(t), "select repeat('x', 10*1024*1024) || 'end', decode(repeat('ab', 5*1024*1024), 'hex')", mode).Scan(&s, &b)
			d := newDigest()
			d.add(s, string(b))
			o.add("mode %v: %d and %d bytes %s %s", mode, len(s), len(b), d, pgErr(err))
		}
		// And 10 MB the other way, as a parameter.
		big := bytes.Repeat([]byte{1, 2, 3, 4, 5}, 2*1024*1024)
		var n int
		var sum string
		err := conn.QueryRow(pgCtx(t), "select length($1::bytea), md5($1::bytea)", big).Scan(&n, &sum)
		o.add("parameter of %d bytes: %d %s %s", len(big), n, sum, pgErr(err))
	}, []string{"10485763 and 5242880 bytes", "parameter of 10485760 bytes: 10485760"}},
	{"large result 100k rows", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			rows, err := conn.Query(pgCtx(t), "select g, md5(g::text), g % 7 = 0, now() - now() from generate_series(1, 100000) g", mode)
			if err != nil {
				o.add("query: %s", pgErr(err))
				continue
			}
			d := newDigest()
			for rows.Next() {
				vals, _ := rows.Values()
				d.add(values(vals))
			}
			rows.Close()
			o.add("mode %v: %s tag %q %s", mode, d, rows.CommandTag(), pgErr(rows.Err()))

			// An error after rows were sent.
			rows, err = conn.Query(pgCtx(t), "select g, 1 / (g - 50000) from generate_series(1, 100000) g", mode)
			if err != nil {
				o.add("query: %s", pgErr(err))
				continue
			}
			n := 0
			for rows.Next() {
				n++
			}
			rows.Close()
			o.add("mode %v: error after rows: %s", mode, pgErr(rows.Err()))
			query(t, conn, o, "select 'next statement'", mode)
		}
	}, []string{"100000 items", "error after rows: error ERROR 22012", "next statement"}},
	{"multi-statement simple query", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		for _, sql := range []string{
			"select 1 as a; select 'x' as b, null::int as c; create temp table ms (i int); insert into ms values (1), (2); update ms set i = i + 10; select * from ms order by i",
			"select 1; select 1/0; select 'never'",
			"begin; insert into ms values (3); commit; select count(*) from ms",
			"begin; insert into ms values (4); select nope; commit",
			"select count(*) from ms",
			"rollback; select count(*) from ms",
		} {
			o.add("batch %q", sql)
			results, err := conn.PgConn().Exec(pgCtx(t), sql).ReadAll()
			for _, r := range results {
				var cols []string
				for _, f := range r.FieldDescriptions {
					cols = append(cols, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
				}
				o.add("  result columns %v rows %q tag %q %s", cols, r.Rows, r.CommandTag.String(), pgErr(r.Err))
			}
			o.add("  %d results, %s", len(results), pgErr(err))
		}
	}, []string{"6 results, ok", "25P02"}},
	{"COPY FROM STDIN", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		exec(t, conn, o, "create temp table cp (id int primary key, name text, amount numeric(12,2), at timestamptz, data bytea)")
		var rows [][]any
		at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		for i := range 20000 {
			rows = append(rows, []any{i, fmt.Sprintf("name-%d", i), fmt.Sprintf("%d.%02d", i, i%100), at.Add(time.Duration(i) * time.Second), []byte{byte(i)}})
		}
		n, err := conn.CopyFrom(pgCtx(t), pgx.Identifier{"cp"}, []string{"id", "name", "amount", "at", "data"}, pgx.CopyFromRows(rows))
		o.add("binary CopyFrom: %d %s", n, pgErr(err))
		var csv strings.Builder
		for i := 20000; i < 30000; i++ {
			fmt.Fprintf(&csv, "%d,\"csv, %d\",%d.5,2024-01-01 00:00:00+00,\\x0%d\n", i, i, i, i%10)
		}
		tag, err := conn.PgConn().CopyFrom(pgCtx(t), strings.NewReader(csv.String()), "copy cp from stdin (format csv)")
		o.add("csv copy: tag %q %s", tag.String(), pgErr(err))
		tag, err = conn.PgConn().CopyFrom(pgCtx(t), strings.NewReader("1\tdup\t1\t2024-01-01\t\\\\x00\n"), "copy cp from stdin")
		o.add("duplicate row: tag %q %s", tag.String(), pgErr(err))
		tag, err = conn.PgConn().CopyFrom(pgCtx(t), strings.NewReader("40000\tbad\tnot-a-number\t2024-01-01\t\\\\x00\n"), "copy cp from stdin")
		o.add("bad value: tag %q %s", tag.String(), pgErr(err))
		// The client gives up half way: CopyFail, and the server's error.
		sent := 0
		n, err = conn.CopyFrom(pgCtx(t), pgx.Identifier{"cp"}, []string{"id"}, pgx.CopyFromFunc(func() ([]any, error) {
			sent++
			if sent > 1000 {
				return nil, errors.New("the source broke")
			}
			return []any{100000 + sent}, nil
		}))
		o.add("abandoned CopyFrom: %d %s", n, pgErr(err))
		query(t, conn, o, "select count(*), sum(amount), md5(string_agg(name || at::text || encode(data, 'hex'), ',' order by id)) from cp")
	}, []string{"binary CopyFrom: 20000 ok", "57014", "COPY 10000", "23505", "22P02"}},
	{"pipelined batch", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		exec(t, conn, o, "create temp table pb (id int primary key)")
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
			o.add("mode %v", mode)
			// A batch is sent at once (a pipeline for the extended
			// protocol) and read back in order; after the error the rest
			// is skipped and the batch rolled back.
			b := &pgx.Batch{}
			b.Queue("insert into pb values ($1)", 1)
			b.Queue("select id, $1::text from pb", "x")
			b.Queue("insert into pb values ($1)", 1)
			b.Queue("select $1::int", 2)
			br := conn.SendBatch(pgCtx(t), b)
			tag, err := br.Exec()
			o.add("insert %q %s", tag.String(), pgErr(err))
			rows, err := br.Query()
			if err == nil {
				rowsObs(o, rows)
			} else {
				o.add("query %s", pgErr(err))
			}
			tag, err = br.Exec()
			o.add("duplicate %q %s", tag.String(), pgErr(err))
			rows, err = br.Query()
			if err == nil {
				rowsObs(o, rows)
			} else {
				o.add("query %s", pgErr(err))
			}
			o.add("close %s", pgErr(br.Close()))
			query(t, conn, o, "select count(*) from pb")
		}
	}, []string{"23505", "int64=0"}},
	{"COPY TO STDOUT", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		for _, sql := range []string{
			"copy (select g, md5(g::text), now() - now() from generate_series(1, 50000) g) to stdout",
			"copy (select g, 'a,b' from generate_series(1, 1000) g) to stdout (format csv, header)",
			"copy (select g::int8, g::text::bytea from generate_series(1, 1000) g) to stdout (format binary)",
			"copy (select 1 / (g - 5000) from generate_series(1, 10000) g) to stdout",
			"copy nope to stdout",
		} {
			var buf bytes.Buffer
			tag, err := conn.PgConn().CopyTo(pgCtx(t), &buf, sql)
			d := newDigest()
			d.add(buf.String())
			o.add("%q: %d bytes %s tag %q %s", sql, buf.Len(), d, tag.String(), pgErr(err))
		}
	}, []string{"COPY 50000", "22012"}},
	{"LISTEN/NOTIFY", func(t *testing.T, c *pgClient, o *obs) {
		listener, sender := c.connect(t, o), c.connect(t, o)
		exec(t, listener, o, "listen compat_ch")
		exec(t, sender, o, "notify compat_ch, 'from another connection'")
		var senderPID uint32
		if err := sender.QueryRow(pgCtx(t), "select pg_backend_pid()").Scan(&senderPID); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			o.add("wait: %s", pgErr(err))
		} else {
			// The process ID a notification carries is the sender's
			// backend; the sender's client is told the same one. The IDs
			// themselves differ from run to run, so only these
			// equalities are compared.
			o.add("notification %q %q pid==sender.PID() %v pid==sender's pg_backend_pid() %v",
				n.Channel, n.Payload, n.PID == sender.PgConn().PID(), n.PID == senderPID)
		}
		query(t, sender, o, "select pg_notify('compat_ch', $1)", strings.Repeat("p", 7999))
		if n, err = listener.WaitForNotification(ctx); err == nil {
			o.add("notification %q with %d bytes", n.Channel, len(n.Payload))
		} else {
			o.add("wait: %s", pgErr(err))
		}
		// A connection's own notification carries its own process ID.
		exec(t, listener, o, "notify compat_ch, 'self'")
		if n, err = listener.WaitForNotification(ctx); err == nil {
			var self uint32
			_ = listener.QueryRow(pgCtx(t), "select pg_backend_pid()").Scan(&self)
			o.add("own notification %q pid==PID() %v pid==pg_backend_pid() %v", n.Payload, n.PID == listener.PgConn().PID(), n.PID == self)
		} else {
			o.add("wait: %s", pgErr(err))
		}
		exec(t, listener, o, "unlisten *")
	}, []string{"pid==sender.PID() true pid==sender's pg_backend_pid() true", "pid==PID() true pid==pg_backend_pid() true"}},
	{"cancel by context", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			waitActive(t, c.admin, "select pg_sleep(30) -- cancel me")
			cancel()
		}()
		_, err := conn.Exec(ctx, "select pg_sleep(30) -- cancel me")
		o.add("sleep: %s", pgErr(err))
		// The connection goes on after a cancelled statement.
		query(t, conn, o, "select 'still here'")
	}, []string{"57014", "still here"}},
	{"protocol 3.2 requested", func(t *testing.T, c *pgClient, o *obs) {
		for _, version := range []string{"3.0", "3.2"} {
			conn, err := c.connectWith(t, o, func(cfg *pgx.ConnConfig) { cfg.MaxProtocolVersion = version })
			if err != nil {
				o.add("connect %s: %s", version, pgErr(err))
				continue
			}
			var backend uint32
			err = conn.QueryRow(pgCtx(t), "select pg_backend_pid()").Scan(&backend)
			// The secret key's value is replaced by the agent, by design;
			// its length says which protocol version the client was given.
			o.add("asked %s: secret key of %d bytes, PID()==pg_backend_pid() %v %s", version, len(conn.PgConn().SecretKey()), conn.PgConn().PID() == backend, pgErr(err))
			sent := make(chan error, 1)
			go func() {
				waitActive(t, c.admin, "select pg_sleep(30) -- cancel "+version)
				sent <- conn.PgConn().CancelRequest(pgCtx(t))
			}()
			_, err = conn.Exec(pgCtx(t), "select pg_sleep(30) -- cancel "+version)
			o.add("cancel request %s", pgErr(<-sent))
			o.add("sleep: %s", pgErr(err))
			o.add("ping %s", pgErr(conn.Ping(pgCtx(t))))
		}
	}, []string{"PID()==pg_backend_pid() true", "57014", "ping ok"}},
	{"terminate backend", func(t *testing.T, c *pgClient, o *obs) {
		victim, killer := c.connect(t, o), c.connect(t, o)
		var backend uint32
		if err := victim.QueryRow(pgCtx(t), "select pg_backend_pid()").Scan(&backend); err != nil {
			t.Fatal(err)
		}
		// The process ID the client holds is its backend's, so the
		// application can end it (the ID itself differs between runs and
		// is not compared).
		o.add("PID()==pg_backend_pid() %v", victim.PgConn().PID() == backend)
		var done bool
		err := killer.QueryRow(pgCtx(t), "select pg_terminate_backend($1, 10000)", int32(victim.PgConn().PID())).Scan(&done)
		o.add("pg_terminate_backend: %v %s", done, pgErr(err))
		_, err = victim.Exec(pgCtx(t), "select 1")
		o.add("victim: %s closed %v", pgErr(err), victim.IsClosed())
		query(t, killer, o, "select 'killer lives'")

		// pg_cancel_backend on the PID another client holds stops its
		// statement.
		sleeper := c.connect(t, o)
		pid := int32(sleeper.PgConn().PID())
		cancelled := make(chan error, 1)
		go func() {
			waitActive(t, c.admin, "select pg_sleep(30) -- pg_cancel_backend")
			_, err := killer.Exec(pgCtx(t), "select pg_cancel_backend($1)", pid)
			cancelled <- err
		}()
		_, err = sleeper.Exec(pgCtx(t), "select pg_sleep(30) -- pg_cancel_backend")
		o.add("pg_cancel_backend: %s", pgErr(<-cancelled))
		o.add("sleeper: %s", pgErr(err))
	}, []string{"PID()==pg_backend_pid() true", "pg_terminate_backend: true", "FATAL 57P01", "sleeper: error ERROR 57014"}},
	{"session variables", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		// What the server reported at startup.
		for _, k := range []string{"server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
			"integer_datetimes", "standard_conforming_strings", "is_superuser", "session_authorization", "application_name",
			"default_transaction_read_only", "in_hot_standby"} {
			o.add("parameter status %s=%q", k, conn.PgConn().ParameterStatus(k))
		}
		exec(t, conn, o, "set search_path to compat_nowhere, public")
		query(t, conn, o, "show search_path")
		query(t, conn, o, "select current_schemas(true)")
		exec(t, conn, o, "set application_name = 'compat-suite'")
		o.add("parameter status application_name=%q", conn.PgConn().ParameterStatus("application_name"))
		query(t, conn, o, "select application_name, usename, datname, state from pg_stat_activity where pid = pg_backend_pid()")
		exec(t, conn, o, "set timezone = 'Asia/Kolkata'")
		o.add("parameter status TimeZone=%q", conn.PgConn().ParameterStatus("TimeZone"))
		query(t, conn, o, "select '2024-01-01 00:00:00+00'::timestamptz::text, current_setting('TimeZone')")
		query(t, conn, o, "select set_config('compat.flag', 'on', false), current_setting('compat.flag')")
		exec(t, conn, o, "set datestyle = 'SQL, DMY'")
		o.add("parameter status DateStyle=%q", conn.PgConn().ParameterStatus("DateStyle"))
		query(t, conn, o, "select '2024-02-29'::date::text")
		exec(t, conn, o, "set nope_no_such_setting = 1")
		exec(t, conn, o, "reset all")
		query(t, conn, o, "show application_name")
		query(t, conn, o, "select current_user, session_user, current_database()")
	}, []string{"compat-suite", "Asia/Kolkata"}},
	{"startup parameters", func(t *testing.T, c *pgClient, o *obs) {
		conn, err := c.connectWith(t, o, func(cfg *pgx.ConnConfig) {
			cfg.RuntimeParams = map[string]string{
				"application_name": "compat-startup",
				"search_path":      "compat_x, public",
				"DateStyle":        "German, DMY",
				"TimeZone":         "Europe/Paris",
				"options":          "-c work_mem=128kB -c statement_timeout=5s",
			}
		})
		if err != nil {
			o.add("connect: %s", pgErr(err))
			return
		}
		for _, k := range []string{"application_name", "DateStyle", "TimeZone"} {
			o.add("parameter status %s=%q", k, conn.PgConn().ParameterStatus(k))
		}
		query(t, conn, o, "select current_setting('search_path'), current_setting('work_mem'), current_setting('statement_timeout'), '2024-02-29'::date::text")
		query(t, conn, o, "select application_name from pg_stat_activity where pid = pg_backend_pid()")
		// A database that does not exist: the server's refusal.
		_, err = c.connectWith(t, o, func(cfg *pgx.ConnConfig) { cfg.Database = "compat_no_such_db" })
		o.add("unknown database: %s", pgErr(err))
		_, err = c.connectWith(t, o, func(cfg *pgx.ConnConfig) {
			cfg.RuntimeParams = map[string]string{"nope_no_such_parameter": "1"}
		})
		o.add("unknown parameter: %s", pgErr(err))
	}, []string{"German, DMY", "128kB", "compat-startup", "3D000", "42704"}},
	{"server timeouts", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		exec(t, conn, o, "set statement_timeout = '200ms'")
		exec(t, conn, o, "select pg_sleep(5)")
		exec(t, conn, o, "reset statement_timeout")
		// The server ends a session idle in a transaction for too long,
		// and says so while the client is not asking anything.
		exec(t, conn, o, "set idle_in_transaction_session_timeout = '300ms'")
		exec(t, conn, o, "begin")
		var backend uint32
		if err := conn.QueryRow(pgCtx(t), "select pg_backend_pid()").Scan(&backend); err != nil {
			t.Fatal(err)
		}
		waitBackendGone(t, c.admin, backend)
		exec(t, conn, o, "select 1")
		o.add("closed %v", conn.IsClosed())
	}, []string{"57014", "25P03"}},
	{"TLS", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		tc, ok := conn.PgConn().Conn().(*tls.Conn)
		o.add("client TLS %v", ok)
		if ok {
			o.add("client TLS version %s", tls.VersionName(tc.ConnectionState().Version))
		}
		// The server's view of the TLS it has with its peer (the client
		// or the agent). The client certificate's issuer differs by
		// design (the harness CA directly, Tollgate's db-client CA
		// through the agent) and is left out.
		query(t, conn, o, "select ssl, version, cipher, bits, client_dn from pg_stat_ssl where pid = pg_backend_pid()")
		query(t, conn, o, "select current_setting('ssl')")
	}, []string{"client TLS true", "bool=true | string=TLSv1.3"}},
	{"large objects", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		tx, err := conn.Begin(pgCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		lo := tx.LargeObjects()
		oid, err := lo.Create(pgCtx(t), 0)
		// The OID is the server's choice, and differs from one run to the
		// next: only whether one was given is compared.
		o.add("create: oid>0 %v %s", oid > 0, pgErr(err))
		obj, err := lo.Open(pgCtx(t), oid, pgx.LargeObjectModeRead|pgx.LargeObjectModeWrite)
		if err != nil {
			o.add("open: %s", pgErr(err))
		} else {
			data := bytes.Repeat([]byte("large object "), 20000)
			n, err := obj.Write(data)
			o.add("write %d %s", n, pgErr(err))
			pos, err := obj.Seek(5, 0)
			o.add("seek %d %s", pos, pgErr(err))
			buf := make([]byte, 300000)
			n, err = obj.Read(buf)
			o.add("read %d %q %v", n, buf[:20], err)
			o.add("truncate %s", pgErr(obj.Truncate(100)))
			o.add("close %s", pgErr(obj.Close()))
		}
		// The OID is in the error message too.
		oidText := regexp.MustCompile(`\b` + fmt.Sprint(oid) + `\b`)
		exec(t, tx.Conn(), o, "select lo_put($1, 10, 'PUT'::bytea)", oid)
		var got []byte
		err = tx.QueryRow(pgCtx(t), "select lo_get($1, 5, 12)", oid).Scan(&got)
		o.add("lo_get part %q %s", got, pgErr(err))
		var size int
		err = tx.QueryRow(pgCtx(t), "select length(lo_get($1))", oid).Scan(&size)
		o.add("lo_get size %d %s", size, pgErr(err))
		o.add("unlink %s", pgErr(lo.Unlink(pgCtx(t), oid)))
		var gone obs
		query(t, tx.Conn(), &gone, "select lo_get($1)", oid)
		for _, l := range gone.lines {
			o.add("%s", oidText.ReplaceAllString(l, "<oid>"))
		}
		o.add("rollback %s", pgErr(tx.Rollback(pgCtx(t))))
		var made uint32
		err = conn.QueryRow(pgCtx(t), "select lo_from_bytea(0, 'abc')").Scan(&made)
		o.add("lo_from_bytea %s", pgErr(err))
		query(t, conn, o, "select lo_get($1, 1, 1), lo_unlink($1)", made)
	}, []string{"write 260000 ok", "lo_get size 100 ok", "42704"}},
	{"transactions with errors", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		exec(t, conn, o, "create temp table tx (id int primary key, v text)")
		exec(t, conn, o, "begin")
		exec(t, conn, o, "insert into tx values (1, 'a')")
		exec(t, conn, o, "insert into tx values ($1, $2)", 1, "dup")
		exec(t, conn, o, "select 1")
		query(t, conn, o, "select $1::int", 2)
		o.add("tx status %c", conn.PgConn().TxStatus())
		exec(t, conn, o, "commit")
		o.add("tx status %c", conn.PgConn().TxStatus())
		query(t, conn, o, "select count(*) from tx")

		exec(t, conn, o, "begin")
		exec(t, conn, o, "insert into tx values (2, 'b')")
		exec(t, conn, o, "savepoint s1")
		exec(t, conn, o, "insert into tx values (2, 'dup')")
		exec(t, conn, o, "select 1")
		exec(t, conn, o, "rollback to savepoint s1")
		exec(t, conn, o, "insert into tx values (3, 'c')")
		exec(t, conn, o, "release savepoint s1")
		exec(t, conn, o, "commit")
		query(t, conn, o, "select * from tx order by id")

		exec(t, conn, o, "begin")
		exec(t, conn, o, "select 1/0")
		exec(t, conn, o, "rollback")
		exec(t, conn, o, "rollback")
		exec(t, conn, o, "begin isolation level serializable read only")
		exec(t, conn, o, "insert into tx values (9, 'ro')")
		exec(t, conn, o, "rollback")

		tx, err := conn.Begin(pgCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(pgCtx(t), "insert into tx values ($1, $2)", 3, "dup")
		o.add("pgx tx insert: %s", pgErr(err))
		_, err = tx.Exec(pgCtx(t), "select $1::int", 1)
		o.add("pgx tx after error: %s", pgErr(err))
		o.add("pgx tx commit: %v", tx.Commit(pgCtx(t)))
	}, []string{"25P02", "tag \"ROLLBACK\"", "23505"}},
	{"notices and errors", func(t *testing.T, c *pgClient, o *obs) {
		conn := c.connect(t, o)
		exec(t, conn, o, `do $$ begin raise notice 'n %', 1; raise warning 'w' using detail = 'd', hint = 'h', errcode = '01000'; end $$`)
		exec(t, conn, o, "create temp table nt (id int)")
		exec(t, conn, o, "create temp table if not exists nt (id int)")
		exec(t, conn, o, "drop table if exists compat_no_such_table")
		exec(t, conn, o, `do $$ begin raise exception 'custom' using errcode = 'P0099', detail = 'dd', hint = 'hh'; end $$`)
		query(t, conn, o, "select * from nt where")
		query(t, conn, o, "select 'abc'::int")
		query(t, conn, o, "select repeat('é', 3), length(repeat('é', 3)), octet_length('é')")
	}, []string{"notice NOTICE 00000 \"n 1\"", "P0099"}},
}

// waitBackendGone waits until a backend process has ended.
func waitBackendGone(t *testing.T, adminDSN string, pid uint32) {
	ctx := pgCtx(t)
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Error(err)
		return
	}
	defer admin.Close(ctx)
	for ctx.Err() == nil {
		var n int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where pid = $1", int32(pid)).Scan(&n); err != nil {
			t.Error(err)
			return
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitActive waits until a statement runs in the database.
func waitActive(t *testing.T, adminDSN, sql string) {
	ctx := pgCtx(t)
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Error(err)
		return
	}
	defer admin.Close(ctx)
	for ctx.Err() == nil {
		var n int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where state = 'active' and query = $1", sql).Scan(&n); err != nil {
			t.Error(err)
			return
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
