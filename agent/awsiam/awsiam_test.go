package awsiam_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/awsiam"
	"github.com/tollgate-db/tollgate/config"
)

const (
	baseKey    = "AKIAEXAMPLEBASE00001"
	baseSecret = "base/secret/key/for/tests/only/000000000"
)

// sigv4Escape is SigV4's URI encoding: everything but unreserved
// characters, as %XX in upper case.
func sigv4Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, s string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(s))
	return h.Sum(nil)
}

// checkToken parses a token and recomputes its SigV4 signature with secret,
// independently of the SDK: it fails the test on any difference. The token
// carries session as its security token, none when session is empty
// (static credentials).
func checkToken(t *testing.T, tok, host, port, user, region, key, secret, session string) {
	t.Helper()
	if strings.Contains(tok, "://") {
		t.Fatalf("token %q has a scheme", tok)
	}
	u, err := url.Parse("https://" + tok)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != host || u.Port() != port || (u.Path != "" && u.Path != "/") {
		t.Fatalf("token for %s port %s path %q, want %s:%s", u.Hostname(), u.Port(), u.Path, host, port)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"Action": "connect", "DBUser": user, "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
		"X-Amz-Expires": "900", "X-Amz-SignedHeaders": "host",
	} {
		if q.Get(k) != want {
			t.Fatalf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	date := q.Get("X-Amz-Date")
	at, err := time.Parse("20060102T150405Z", date)
	if err != nil {
		t.Fatalf("X-Amz-Date %q: %v", date, err)
	}
	if d := time.Since(at); d < -time.Minute || d > time.Minute {
		t.Fatalf("token signed at %s, %s from now", at, d)
	}
	scope := date[:8] + "/" + region + "/rds-db/aws4_request"
	if q.Get("X-Amz-Credential") != key+"/"+scope {
		t.Fatalf("X-Amz-Credential %q, want %q", q.Get("X-Amz-Credential"), key+"/"+scope)
	}
	if err := sigErr(tok, region, secret); err != nil {
		t.Fatal(err)
	}
	if session == "" && q.Has("X-Amz-Security-Token") {
		t.Fatal("static credentials without a session token produced one")
	}
	if q.Get("X-Amz-Security-Token") != session {
		t.Fatalf("security token %q, want %q", q.Get("X-Amz-Security-Token"), session)
	}
}

// sigErr recomputes a token's SigV4 signature with secret.
func sigErr(tok, region, secret string) error {
	u, err := url.Parse("https://" + tok)
	if err != nil {
		return err
	}
	q := u.Query()
	date := q.Get("X-Amz-Date")
	if len(date) < 8 {
		return fmt.Errorf("X-Amz-Date %q", date)
	}
	scope := date[:8] + "/" + region + "/rds-db/aws4_request"
	sig := q.Get("X-Amz-Signature")
	q.Del("X-Amz-Signature")
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cq []string
	for _, k := range keys {
		cq = append(cq, sigv4Escape(k)+"="+sigv4Escape(q.Get(k)))
	}
	emptyHash := sha256.Sum256(nil)
	creq := strings.Join([]string{"GET", "/", strings.Join(cq, "&"), "host:" + u.Host, "", "host", hex.EncodeToString(emptyHash[:])}, "\n")
	ch := sha256.Sum256([]byte(creq))
	sts := "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + hex.EncodeToString(ch[:])
	k := hmacSHA256([]byte("AWS4"+secret), date[:8])
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, "rds-db")
	k = hmacSHA256(k, "aws4_request")
	if want := hex.EncodeToString(hmacSHA256(k, sts)); sig != want {
		return fmt.Errorf("signature %s, recomputed %s", sig, want)
	}
	return nil
}

func database(name, addr string, c config.AWS) *agent.Database {
	host, _, _ := strings.Cut(addr, ":")
	return &agent.Database{Config: config.Database{Name: name, Protocol: "postgres", URI: addr, AWS: c}, Host: host, Addr: addr}
}

func TestTokenSignature(t *testing.T) {
	r := awsiam.NewRegistry(awsiam.Options{Credentials: credentials.NewStaticCredentialsProvider(baseKey, baseSecret, "")})
	ctx := context.Background()
	for _, c := range []struct{ proto, addr, user string }{
		{"postgres", "proxy-pg.proxy-abc.eu-west-1.rds.amazonaws.com:5432", "alice"},
		{"mysql", "proxy-my.proxy-abc.eu-west-1.rds.amazonaws.com:3306", "bob"},
		{"sqlserver", "proxy-ms.proxy-abc.eu-west-1.rds.amazonaws.com:1433", "carol@example.com"},
	} {
		db := database(c.proto, c.addr, config.AWS{Region: "eu-west-1", RDSProxy: true})
		tok, err := r.Token(ctx, db, c.user)
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(c.addr, ":")
		checkToken(t, tok, host, port, c.user, "eu-west-1", baseKey, baseSecret, "")
		if sigErr(strings.Replace(tok, "DBUser=", "DBUser=x", 1), "eu-west-1", baseSecret) == nil {
			t.Fatal("a token with its user changed after signing verifies")
		}
	}
	// Without rds_proxy or region there is no token.
	if _, err := r.Token(ctx, database("x", "h:1", config.AWS{Region: "eu-west-1"}), "u"); err == nil || !strings.Contains(err.Error(), "rds_proxy") {
		t.Fatalf("no rds_proxy: %v", err)
	}
	if _, err := r.Token(ctx, database("y", "h:1", config.AWS{RDSProxy: true}), "u"); err == nil || !strings.Contains(err.Error(), "aws.region") {
		t.Fatalf("no region: %v", err)
	}
	if _, err := r.Token(ctx, database("z", "h", config.AWS{RDSProxy: true, Region: "eu-west-1"}), "u"); err == nil || !strings.Contains(err.Error(), "port") {
		t.Fatalf("no port: %v", err)
	}
}

func TestTamperedTokenFails(t *testing.T) {
	r := awsiam.NewRegistry(awsiam.Options{Credentials: credentials.NewStaticCredentialsProvider(baseKey, baseSecret, "")})
	db := database("pg", "proxy.example.com:5432", config.AWS{Region: "us-east-1", RDSProxy: true})
	tok, err := r.Token(context.Background(), db, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := sigErr(tok, "us-east-1", baseSecret); err != nil {
		t.Fatalf("the genuine token: %v", err)
	}
	u, _ := url.Parse("https://" + tok)
	q := u.Query()
	q.Set("DBUser", "root")
	if sigErr(u.Host+"/?"+q.Encode(), "us-east-1", baseSecret) == nil {
		t.Fatal("a token with its user changed verifies")
	}
	if sigErr(strings.Replace(tok, "proxy.example.com", "other.example.com", 1), "us-east-1", baseSecret) == nil {
		t.Fatal("the token verifies for another host")
	}
	if sigErr(tok, "us-east-1", "another secret") == nil {
		t.Fatal("the token verifies with another secret")
	}
	if sigErr(tok, "eu-west-1", baseSecret) == nil {
		t.Fatal("the token verifies for another region")
	}
}

// TestDefaultChain takes credentials from the environment, the first
// source of the SDK's default chain.
func TestDefaultChain(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
	t.Setenv("AWS_SESSION_TOKEN", "environment-session-token")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	r := awsiam.NewRegistry(awsiam.Options{})
	db := database("pg", "proxy.example.com:5432", config.AWS{Region: "us-west-2", RDSProxy: true})
	tok, err := r.Token(context.Background(), db, "alice")
	if err != nil {
		t.Fatal(err)
	}
	checkToken(t, tok, "proxy.example.com", "5432", "alice", "us-west-2", "AKIAENVIRONMENT00001", "environment-secret", "environment-session-token")
}

// TestAssumeRole chains the base credentials into a role through a fake
// STS that checks the request as STS would see it.
func TestAssumeRole(t *testing.T) {
	var calls atomic.Int32
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		auth := r.Header.Get("Authorization")
		want := map[string]string{
			"Action": "AssumeRole", "RoleArn": "arn:aws:iam::123456789012:role/tollgate-rds",
			"RoleSessionName": awsiam.RoleSessionName, "ExternalId": "tollgate-ext-1",
		}
		for k, v := range want {
			if r.PostForm.Get(k) != v {
				w.WriteHeader(403)
				fmt.Fprintf(w, `<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>%s is %q, want %q</Message></Error></ErrorResponse>`, k, r.PostForm.Get(k), v)
				return
			}
		}
		if !strings.Contains(auth, "Credential="+baseKey+"/") || !strings.Contains(auth, "/us-east-1/sts/aws4_request") {
			w.WriteHeader(403)
			fmt.Fprintf(w, `<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>bad authorization %q</Message></Error></ErrorResponse>`, auth)
			return
		}
		calls.Add(1)
		exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/tollgate-rds/tollgate-agent</Arn><AssumedRoleId>AROA:tollgate-agent</AssumedRoleId></AssumedRoleUser>
<Credentials><AccessKeyId>ASIAASSUMEDROLE00001</AccessKeyId><SecretAccessKey>assumed-secret</SecretAccessKey><SessionToken>assumed-session-token</SessionToken><Expiration>%s</Expiration></Credentials>
</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>`, exp)
	}))
	defer sts.Close()
	r := awsiam.NewRegistry(awsiam.Options{
		Credentials: credentials.NewStaticCredentialsProvider(baseKey, baseSecret, ""),
		STSEndpoint: sts.URL, HTTPClient: sts.Client(),
	})
	c := config.AWS{Region: "us-east-1", RDSProxy: true, AssumeRoleARN: "arn:aws:iam::123456789012:role/tollgate-rds", ExternalID: "tollgate-ext-1"}
	db := database("ms", "proxy.example.com:1433", c)
	for range 2 {
		tok, err := r.Token(context.Background(), db, "alice")
		if err != nil {
			t.Fatal(err)
		}
		checkToken(t, tok, "proxy.example.com", "1433", "alice", "us-east-1", "ASIAASSUMEDROLE00001", "assumed-secret", "assumed-session-token")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d AssumeRole calls for two tokens, want 1 (credentials cached)", n)
	}
	// A wrong external id is refused by STS, and the error says so.
	c.ExternalID = "wrong"
	_, err := r.Token(context.Background(), database("ms", "proxy.example.com:1433", c), "alice")
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("wrong external id: %v", err)
	}
}
