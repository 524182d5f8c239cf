package harness

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RedisOptions configures a Redis server; the zero value is a server with
// a test CA and no ACL users but the harness's own.
type RedisOptions struct {
	TLS TLSOptions
	// Users are ACL users made at start: on, nopass, every key, channel
	// and command. nopass is safe only because the server takes nothing
	// but TLS with a client certificate it trusts (tls-auth-clients yes),
	// which is how Tollgate reaches Redis as a user.
	Users []string
	// Config are extra redis.conf lines, e.g. "maxclients 20".
	Config []string
}

// RedisServer is a Redis server run by the harness. It listens on
// 127.0.0.1 with TLS only and requires a client certificate; its default
// user is off, so a client must sign in as an ACL user. The harness
// administers it as its own user "harness" with a random password.
type RedisServer struct {
	Dir string
	// TestCA issued the server certificate unless TLSOptions gave one, and
	// is always trusted for client certificates (beside
	// TLSOptions.ClientCA).
	TestCA         *CA
	ClientCAFile   string
	ServerCertFile string
	ServerKeyFile  string
	ServerCAFile   string // verifies the server certificate

	bin        string
	conf       string
	port       int
	password   string
	clients    *clientCerts
	serverPool *x509.CertPool
	stderrFile string

	mu   sync.Mutex
	proc *Process
}

const redisPackage = "the Debian package redis-server"

// Redis starts a Redis server for this test, stopped when the test ends.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return RedisWith(t, RedisOptions{})
}

// RedisWith starts a Redis server configured by o for this test.
func RedisWith(t testing.TB, o RedisOptions) *RedisServer {
	t.Helper()
	r, err := startRedis(t, o)
	if err != nil {
		t.Fatal(err)
	}
	logOnFailure(t, r.tail)
	return r
}

func startRedis(t testing.TB, o RedisOptions) (*RedisServer, error) {
	bin, ok := findBinary("redis-server", "/usr/bin", "/usr/local/bin")
	if !ok {
		return nil, fmt.Errorf("harness: redis-server not found in /usr/bin, /usr/local/bin or PATH: install %s", redisPackage)
	}
	dir := t.TempDir()
	// The test CA stays trusted beside a given ClientCA: the harness signs
	// in with a certificate of its own, as a user with a password.
	o.TLS.TrustTestCA = true
	tlsFiles, err := writeServerTLS(filepath.Join(dir, "tls"), o.TLS)
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	r := &RedisServer{
		Dir: dir, TestCA: tlsFiles.ca, bin: bin, password: hex.EncodeToString(pw),
		ClientCAFile: tlsFiles.clientCAFile, ServerCertFile: tlsFiles.serverCert,
		ServerKeyFile: tlsFiles.serverKey, ServerCAFile: tlsFiles.serverCAFile,
		stderrFile: filepath.Join(dir, "redis.log"),
	}
	r.clients = newClientCerts(tlsFiles, filepath.Join(dir, "clients"))
	if err := os.MkdirAll(r.clients.dir, 0o700); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	serverCA, err := os.ReadFile(r.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	r.serverPool = x509.NewCertPool()
	if !r.serverPool.AppendCertsFromPEM(serverCA) {
		return nil, errors.New("harness: TLSOptions.ServerCA holds no PEM certificate")
	}
	for _, u := range o.Users {
		if u == "" || strings.ContainsAny(u, " \t\r\n") {
			return nil, fmt.Errorf("harness: Redis ACL user %q: names must be one word", u)
		}
	}
	for attempt := 1; ; attempt++ {
		if r.port, err = freePort(); err != nil {
			return nil, err
		}
		if err := r.writeConfig(o); err != nil {
			return nil, err
		}
		err = r.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	return r, nil
}

func (r *RedisServer) writeConfig(o RedisOptions) error {
	lines := []string{
		"bind 127.0.0.1",
		"port 0",
		"tls-port " + strconv.Itoa(r.port),
		"tls-cert-file " + r.ServerCertFile,
		"tls-key-file " + r.ServerKeyFile,
		"tls-ca-cert-file " + r.ClientCAFile,
		"tls-auth-clients yes",
		"dir " + r.Dir,
		`save ""`,
		"appendonly no",
		"daemonize no",
		"loglevel notice",
		"logfile " + r.stderrFile,
		"databases 16",
		"user default off",
		"user harness on >" + r.password + " ~* &* +@all",
	}
	for _, u := range o.Users {
		lines = append(lines, "user "+u+" on nopass ~* &* +@all")
	}
	lines = append(lines, o.Config...)
	r.conf = filepath.Join(r.Dir, "redis.conf")
	if err := os.WriteFile(r.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

func (r *RedisServer) start() error {
	proc, err := StartProcess(Command{
		Name: "redis-server", Path: r.bin, Args: []string{r.conf}, Dir: r.Dir,
		Env: []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}, Log: filepath.Join(r.Dir, "redis.stderr"),
		ExtraLogs: []string{r.stderrFile},
	})
	if err != nil {
		return err
	}
	err = proc.WaitReady(30*time.Second, func() error {
		_, err := r.Do("PING")
		return err
	})
	if err != nil {
		_ = proc.Stop()
		return err
	}
	r.mu.Lock()
	r.proc = proc
	r.mu.Unlock()
	return nil
}

func (r *RedisServer) tail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return ""
	}
	return r.proc.LogTail(60)
}

// Addr is the server's TLS address.
func (r *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Stop stops the server.
func (r *RedisServer) Stop() error {
	r.mu.Lock()
	proc := r.proc
	r.mu.Unlock()
	if proc == nil {
		return nil
	}
	return proc.Stop()
}

// ClientCert returns files of a test-CA client certificate (CN user).
func (r *RedisServer) ClientCert(t testing.TB, user string) (certFile, keyFile string, pair *KeyPair) {
	t.Helper()
	c, err := r.clients.get(user)
	if err != nil {
		t.Fatal(err)
	}
	return c.certFile, c.keyFile, c.pair
}

// TLSConfig is the client side of TLS to the server with cert.
func (r *RedisServer) TLSConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: r.serverPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// Do runs one command as the harness's user on a connection of its own
// and returns the reply: a simple or bulk string, an integer in decimal,
// or the elements of an array joined by newlines. An error reply is an
// error.
func (r *RedisServer) Do(args ...string) (string, error) {
	c, err := r.clients.get("harness")
	if err != nil {
		return "", err
	}
	cert := c.pair.TLSCertificate()
	d := &tls.Dialer{Config: r.TLSConfig(&cert)}
	conn, err := d.Dial("tcp", r.Addr())
	if err != nil {
		return "", fmt.Errorf("harness: redis: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var req []byte
	for _, cmd := range [][]string{{"AUTH", "harness", r.password}, args} {
		req = append(req, '*')
		req = strconv.AppendInt(req, int64(len(cmd)), 10)
		req = append(req, '\r', '\n')
		for _, a := range cmd {
			req = append(req, '$')
			req = strconv.AppendInt(req, int64(len(a)), 10)
			req = append(req, '\r', '\n')
			req = append(req, a...)
			req = append(req, '\r', '\n')
		}
	}
	if _, err := conn.Write(req); err != nil {
		return "", fmt.Errorf("harness: redis: %w", err)
	}
	br := bufio.NewReader(conn)
	if _, err := readRESP(br); err != nil {
		return "", fmt.Errorf("harness: redis AUTH: %w", err)
	}
	out, err := readRESP(br)
	if err != nil {
		return "", fmt.Errorf("harness: redis %s: %w", args[0], err)
	}
	return out, nil
}

// MustDo is Do that fails the test on error.
func (r *RedisServer) MustDo(t testing.TB, args ...string) string {
	t.Helper()
	out, err := r.Do(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// CommandStats returns how many times the server ran each command since
// its start or the last CONFIG RESETSTAT (INFO commandstats), by lower-case
// name ("get", "config|get"). The harness's own AUTH and INFO are counted
// too.
func (r *RedisServer) CommandStats() (map[string]int64, error) {
	info, err := r.Do("INFO", "commandstats")
	if err != nil {
		return nil, err
	}
	stats := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("harness: INFO commandstats line %q: %w", line, err)
				}
				stats[name] = n
			}
		}
	}
	return stats, nil
}

// readRESP reads one RESP2 reply.
func readRESP(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "", nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad array length %q", line)
		}
		var parts []string
		for range max(n, 0) {
			p, err := readRESP(br)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
