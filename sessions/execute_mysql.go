package sessions

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// mysqlRunner re-runs MySQL statements with go-sql-driver: COM_QUERY
// statements as text queries (several statements in one allowed),
// prepared statements with their recorded parameters through the
// server-side prepared-statement protocol, as the client sent them.
type mysqlRunner struct {
	db   *sql.DB
	conn *sql.Conn
	cfg  *mysql.Config
}

func newMySQLRunner(ctx context.Context, target string) (runner, error) {
	cfg, err := mysql.ParseDSN(target)
	if err != nil {
		return nil, fmt.Errorf("MySQL DSN (user@tcp(host:port)/db or user@unix(/socket)/db): %w", err)
	}
	cfg.MultiStatements = true
	// Parameters go to the server as a prepared statement's values, not
	// spliced into the text.
	cfg.InterpolateParams = false
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &mysqlRunner{db: db, conn: conn, cfg: cfg}, nil
}

func (r *mysqlRunner) name() string {
	return fmt.Sprintf("%s@%s(%s)/%s", r.cfg.User, r.cfg.Net, r.cfg.Addr, r.cfg.DBName)
}

func (r *mysqlRunner) close() {
	r.conn.Close()
	r.db.Close()
}

func (r *mysqlRunner) run(ctx context.Context, s Statement) ([]Result, error) {
	cmd := "COM_QUERY"
	var args []any
	if s.Extended {
		cmd = "COM_STMT_EXECUTE"
		for _, p := range s.Params {
			args = append(args, mysqlParam(p))
		}
	}
	start := time.Now()
	// What the statement returned decides how to run it again: a result
	// set is read and counted, otherwise affected rows are what counts.
	if returnsRows(s) {
		rows, err := r.conn.QueryContext(ctx, s.Query, args...)
		if err != nil {
			return mysqlFailure(cmd, err, start)
		}
		defer rows.Close()
		var out []Result
		for {
			n := uint64(0)
			for rows.Next() {
				n++
			}
			out = append(out, Result{Success: true, Tag: fmt.Sprintf("%s rows=%d affected=0", cmd, n), Rows: n, DurationNs: time.Since(start).Nanoseconds()})
			if !rows.NextResultSet() {
				break
			}
		}
		if err := rows.Err(); err != nil {
			return mysqlFailure(cmd, err, start)
		}
		return out, nil
	}
	res, err := r.conn.ExecContext(ctx, s.Query, args...)
	if err != nil {
		return mysqlFailure(cmd, err, start)
	}
	affected, _ := res.RowsAffected()
	tag := fmt.Sprintf("%s rows=0 affected=%d", cmd, affected)
	if id, err := res.LastInsertId(); err == nil && id != 0 {
		tag += " insert_id=" + strconv.FormatInt(id, 10)
	}
	return []Result{{Success: true, Tag: tag, Rows: uint64(affected), DurationNs: time.Since(start).Nanoseconds()}}, nil
}

// returnsRows reports whether the recorded answer was a result set: its
// tag counts rows.
func returnsRows(s Statement) bool {
	for _, r := range s.Results {
		if i := strings.Index(r.Tag, " rows="); i >= 0 {
			n := strings.TrimPrefix(r.Tag[i:], " rows=")
			if j := strings.IndexByte(n, ' '); j >= 0 {
				n = n[:j]
			}
			if v, err := strconv.ParseUint(n, 10, 64); err == nil && v > 0 {
				return true
			}
		}
	}
	return false
}

// mysqlParam turns a recorded parameter back into a value: NULL, bytes
// recorded as base64, or the text.
func mysqlParam(p string) any {
	switch {
	case p == "NULL":
		return nil
	case strings.HasPrefix(p, "base64:"):
		if b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(p, "base64:")); err == nil {
			return b
		}
	}
	return p
}

func mysqlFailure(cmd string, err error, start time.Time) ([]Result, error) {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return nil, err
	}
	return []Result{{Success: false, Tag: cmd, ErrorCode: strconv.Itoa(int(me.Number)), Error: me.Message,
		DurationNs: time.Since(start).Nanoseconds()}}, nil
}
