package postgres_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// scramMatches checks a pg_authid SCRAM-SHA-256 verifier against password.
func scramMatches(t *testing.T, verifier, password string) bool {
	t.Helper()
	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
	parts := strings.Split(verifier, "$")
	if len(parts) != 3 || parts[0] != "SCRAM-SHA-256" {
		t.Fatalf("verifier %q", verifier)
	}
	iterSalt := strings.SplitN(parts[1], ":", 2)
	keys := strings.SplitN(parts[2], ":", 2)
	iter, _ := strconv.Atoi(iterSalt[0])
	salt, _ := base64.StdEncoding.DecodeString(iterSalt[1])
	stored, _ := base64.StdEncoding.DecodeString(keys[0])
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, salted)
	mac.Write([]byte("Client Key"))
	sum := sha256.Sum256(mac.Sum(nil))
	return bytes.Equal(sum[:], stored)
}

// scramVerifier makes a SCRAM-SHA-256 verifier as libpq does for \password.
func scramVerifier(t *testing.T, password string, salt []byte) string {
	salted, err := pbkdf2.Key(sha256.New, password, salt, 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) string {
		mac := hmac.New(sha256.New, salted)
		mac.Write([]byte(name))
		return base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	ck, _ := base64.StdEncoding.DecodeString(key("Client Key"))
	stored := sha256.Sum256(ck)
	b64 := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$4096:" + b64(salt) + "$" + b64(stored[:]) + ":" + key("Server Key")
}

func TestPasswordsRedacted(t *testing.T) {
	s := newStack(t, "strict")
	s.pg.MustExec(t, "alter role app createrole")
	const (
		plain  = "S3cretPW!"
		second = "An0ther'Secret"
		bound  = "B0undSecretValue"
	)
	// What psql's \password sends: a SCRAM verifier made by the client.
	hashed := scramVerifier(t, "H4shedPW", []byte("saltsaltsaltsalt"))
	// psql: simple queries.
	out, err := psql(t, s.psqlConn("app"), "",
		"-c", "CREATE ROLE bob LOGIN PASSWORD '"+plain+"'",
		"-c", "create role carol with login encrypted password E'"+strings.ReplaceAll(second, "'", `\'`)+"'",
		"-c", "ALTER USER dave PASSWORD 'x'")
	if err == nil || !strings.Contains(out, `role "dave" does not exist`) {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	// The last statement's syntax error quotes the second literal.
	const echo = "Ech0Secret"
	out, err = psql(t, s.psqlConn("app"), "", "-c", "CREATE ROLE erin", "-c", "ALTER USER erin PASSWORD '"+hashed+"'",
		"-c", "ALTER ROLE erin PASSWORD 'abc' '"+echo+"'")
	if err == nil || !strings.Contains(out, `syntax error at or near "'`+echo+`'"`) {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	// pgx: the extended protocol, once with a literal and once with a
	// parameter bound to the password's place (the server refuses the
	// latter, but the Bind carrying the value crossed the agent).
	ctx := context.Background()
	conn := s.connect(ctx, t)
	if _, err := conn.Exec(ctx, "ALTER ROLE bob PASSWORD '"+plain+"'", pgx.QueryExecModeExec); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER ROLE bob PASSWORD $1", pgx.QueryExecModeExec, bound); err == nil {
		t.Fatal("a parameter as password was accepted")
	}
	conn.Close(ctx)

	// The database got the statements unchanged.
	admin, err := pgx.Connect(ctx, s.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	check := func(role, password string) {
		var verifier string
		if err := admin.QueryRow(ctx, "select rolpassword from pg_authid where rolname = $1", role).Scan(&verifier); err != nil {
			t.Fatal(err)
		}
		if !scramMatches(t, verifier, password) {
			t.Errorf("role %s: the password set is not %q (%s)", role, password, verifier)
		}
	}
	check("bob", plain)
	check("carol", second)
	var erin string
	if err := admin.QueryRow(ctx, "select rolpassword from pg_authid where rolname = 'erin'").Scan(&erin); err != nil || erin != hashed {
		t.Fatalf("erin's verifier %q, %v", erin, err)
	}

	evs := s.WaitAudit(t, "three sessions end", agenttest.Count("db.session.end", 3))
	var red []string
	for _, ev := range evs {
		if ev["db_query_redacted"] == true {
			red = append(red, ev["type"].(string))
			if q, _ := ev["db_query"].(string); q != "" && !strings.Contains(q, "PASSWORD '***'") && !strings.Contains(q, "password '***'") && !strings.Contains(q, "PASSWORD $1") {
				t.Errorf("redacted query %q", q)
			}
		}
	}
	// 5 simple queries from psql; pgx sends the literal one as a simple
	// query too (no arguments), and the parameter as Parse and Execute
	// (the Bind folded in).
	if got := strings.Join(red, " "); got != strings.Repeat("db.session.query ", 6)+"db.session.postgres.parse db.session.postgres.execute" {
		t.Errorf("events that say redacted: %s", got)
	}
	for _, ev := range agenttest.OfType(evs, "db.session.postgres.execute") {
		if q := ev["db_query"]; q == "ALTER ROLE bob PASSWORD $1" {
			if p, _ := ev["db_query_parameters"].([]any); len(p) != 1 || p[0] != "***" {
				t.Errorf("parameters %v", ev["db_query_parameters"])
			}
		}
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, plain, second, strings.ReplaceAll(second, "'", `\'`), bound, echo, hashed, base64.StdEncoding.EncodeToString([]byte("saltsaltsaltsalt")))
}
