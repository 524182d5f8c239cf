package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
)

// demoRedis is the demo's throwaway Redis, beside its PostgreSQL when
// redis-server is installed, set up as Tollgate reaches a self-hosted
// Redis: TLS only on loopback with a server certificate from the db CA,
// client certificates of the db-client CA required (tls-auth-clients
// yes), Redis's default user off and the demo user an ACL user without a
// password, which only a db-client certificate can reach. Nothing is
// saved: the data lives as long as the demo.
type demoRedis struct {
	demoServer // Dir holds the configuration, the socket, TLS files and the server's log
	Port       int
	socket     string
}

func redisServerProgram() (string, error) {
	for _, d := range []string{"/usr/bin", "/usr/local/bin"} {
		if p := filepath.Join(d, "redis-server"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	return "", errors.New("redis-server not found: install the redis-server package for a demo Redis")
}

// startDemoRedis starts the server with users as its ACL users; port 0
// picks a free one.
func startDemoRedis(ctx context.Context, cas *ca.Authorities, port int, users ...string) (r *demoRedis, err error) {
	server, err := redisServerProgram()
	if err != nil {
		return nil, err
	}
	// A short path: the socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "tollgate-demo-redis-")
	if err != nil {
		return nil, err
	}
	r = &demoRedis{socket: filepath.Join(dir, "redis.sock")}
	r.demoServer = newDemoServer("redis-server", dir, syscall.SIGTERM, r.logTail)
	defer func() {
		if err != nil {
			_ = r.Stop()
		}
	}()
	if _, err := cas.WriteDBFiles(filepath.Join(dir, "server"), []string{"localhost", "127.0.0.1"}, 0); err != nil {
		return nil, err
	}
	if port == 0 {
		if port, err = freeTCPPort(); err != nil {
			return nil, err
		}
	}
	r.Port = port
	conf := []string{
		"bind 127.0.0.1",
		"port 0", // no plaintext port: TLS only
		"tls-port " + strconv.Itoa(port),
		"tls-cert-file " + filepath.Join(dir, "server.crt"),
		"tls-key-file " + filepath.Join(dir, "server.key"),
		"tls-ca-cert-file " + filepath.Join(dir, "server.cas"),
		"tls-auth-clients yes",
		// The socket only tells the demo the server is up; with the
		// default user off it serves nobody.
		"unixsocket " + r.socket,
		"unixsocketperm 700",
		"dir " + dir,
		`save ""`,
		"appendonly no",
		"daemonize no",
		"logfile " + filepath.Join(dir, "redis.log"),
		"user default off",
	}
	for _, u := range users {
		conf = append(conf, "user "+u+" on nopass ~* &* +@all")
	}
	confFile := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(server, confFile)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	if err := r.start(cmd, nil); err != nil {
		return nil, err
	}
	// Any reply on the socket, the refusal of an unauthenticated PING
	// included, means the server is serving.
	if err := r.waitReady(ctx, 30*time.Second, r.ping); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *demoRedis) ping() error {
	c, err := net.DialTimeout("unix", r.socket, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func (r *demoRedis) logTail() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
	return lastLines(string(b), 5)
}
