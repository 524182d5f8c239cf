package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TLSOptions chooses the certificates of a database server. Left empty, the
// server gets a certificate from a fresh test CA and trusts that CA for
// client certificates.
type TLSOptions struct {
	// ClientCA is the PEM of the CA (or CAs) whose client certificates the
	// server accepts, e.g. Tollgate's db-client CA. It replaces the test CA:
	// the harness then cannot mint client certificates itself, unless
	// TrustTestCA is set too.
	ClientCA []byte
	// TrustTestCA keeps the test CA trusted for client certificates beside
	// ClientCA, so that a test can reach the server both through something
	// holding ClientCA's certificates (an agent) and directly, with the
	// harness's own (DSN, Config).
	TrustTestCA bool
	// ServerCert and ServerKey are a PEM certificate and key for the server;
	// ServerCA is the PEM that verifies ServerCert and is written for
	// clients as their root. All three or none.
	ServerCert, ServerKey, ServerCA []byte
}

// serverTLS is the TLS material of one server, written to files.
type serverTLS struct {
	ca           *CA  // the test CA, always made
	trustsTestCA bool // false when ClientCA came from the caller
	clientCAFile string
	serverCert   string
	serverKey    string
	serverCAFile string
}

func writeServerTLS(dir string, o TLSOptions) (*serverTLS, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	ca, err := newCA("Tollgate harness test CA")
	if err != nil {
		return nil, err
	}
	s := &serverTLS{ca: ca, trustsTestCA: len(o.ClientCA) == 0 || o.TrustTestCA}
	clientCA := append([]byte(nil), o.ClientCA...)
	if s.trustsTestCA {
		if len(clientCA) > 0 && clientCA[len(clientCA)-1] != '\n' {
			clientCA = append(clientCA, '\n')
		}
		clientCA = append(clientCA, ca.CertPEM...)
	}
	certPEM, keyPEM, serverCA := o.ServerCert, o.ServerKey, o.ServerCA
	switch given := len(certPEM) > 0; {
	case given != (len(keyPEM) > 0) || given != (len(serverCA) > 0):
		return nil, errors.New("harness: TLSOptions: give ServerCert, ServerKey and ServerCA together, or none of them")
	case !given:
		kp, err := ca.issueServer()
		if err != nil {
			return nil, err
		}
		certPEM, keyPEM, serverCA = kp.CertPEM, kp.KeyPEM, ca.CertPEM
	}
	s.clientCAFile = filepath.Join(dir, "client-ca.crt")
	s.serverCAFile = filepath.Join(dir, "server-ca.crt")
	if err := os.WriteFile(s.clientCAFile, clientCA, 0o644); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if err := os.WriteFile(s.serverCAFile, serverCA, 0o644); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if s.serverCert, s.serverKey, err = writePair(dir, "server", certPEM, keyPEM); err != nil {
		return nil, err
	}
	return s, nil
}

// findBinary looks for name in dirs, then in PATH.
func findBinary(name string, dirs ...string) (string, bool) {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	p, err := exec.LookPath(name)
	return p, err == nil
}

// serverAccount is the account a server that refuses to run as root runs
// as: the current user when not root, else the named system account, made
// if missing.
func serverAccount(name string) (*SystemUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		// The Debian postgresql package makes this account; make it when the
		// server was installed some other way.
		out, uerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if uerr != nil {
			return nil, fmt.Errorf("harness: running as root and there is no %q account to run the server as; useradd failed: %v: %s", name, uerr, out)
		}
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("harness: look up %q: %w", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("harness: account %q: %w", name, err)
	}
	return &SystemUser{Name: name, UID: uint32(uid), GID: uint32(gid)}, nil
}

// chownAll gives dir and everything in it to u (nil: leave as is).
func chownAll(u *SystemUser, paths ...string) error {
	if u == nil {
		return nil
	}
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(u.UID), int(u.GID))
		})
		if err != nil {
			return fmt.Errorf("harness: hand %s to %s: %w", root, u.Name, err)
		}
	}
	return nil
}

// openPath lets another account reach dir: t.TempDir makes 0700
// directories, so each one between the system temp dir and dir gets
// search (x) permission for everyone. Nothing outside the temp dir is
// touched.
func openPath(u *SystemUser, dir string) error {
	if u == nil {
		return nil
	}
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp+string(filepath.Separator)); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		if fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("harness: open %s to %s: %w", d, u.Name, err)
			}
		}
	}
	return nil
}

// shortDir returns dir when a Unix socket path inside it fits in
// sun_path (108 bytes), else a short directory under /tmp removed by
// cleanup. Long test names make t.TempDir paths long.
func shortDir(dir string, cleanup func(func())) (string, error) {
	if len(dir)+len("/.s.PGSQL.65535.lock") < 100 {
		return dir, nil
	}
	d, err := os.MkdirTemp("/tmp", "tg-")
	if err != nil {
		return "", fmt.Errorf("harness: socket dir: %w", err)
	}
	cleanup(func() { os.RemoveAll(d) })
	return d, nil
}

// clientCerts issues test-CA client certificates on first use and keeps
// them, written to files, for the life of the server.
type clientCerts struct {
	ca      *CA
	trusted bool // the server trusts ca for client certificates
	dir     string

	mu sync.Mutex
	m  map[string]*clientCert
}

type clientCert struct {
	pair              *KeyPair
	certFile, keyFile string
}

func newClientCerts(s *serverTLS, dir string) *clientCerts {
	return &clientCerts{ca: s.ca, trusted: s.trustsTestCA, dir: dir, m: map[string]*clientCert{}}
}

func (c *clientCerts) get(user string) (*clientCert, error) {
	if !c.trusted {
		return nil, errors.New("harness: the server trusts an outside client CA (TLSOptions.ClientCA), so the test CA's certificates would be refused: bring a certificate from that CA, or set TLSOptions.TrustTestCA")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.m[user]; ok {
		return cc, nil
	}
	kp, err := c.ca.issueClient(user)
	if err != nil {
		return nil, err
	}
	// File names must not depend on what the user name holds.
	cert, key, err := writePair(c.dir, fmt.Sprintf("client-%d", len(c.m)), kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return nil, err
	}
	cc := &clientCert{pair: kp, certFile: cert, keyFile: key}
	c.m[user] = cc
	return cc, nil
}

// logOnFailure shows a server's log tail when the test fails. Cleanups run
// last-in first-out, so this runs before the server is stopped.
func logOnFailure(t testing.TB, tail func() string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(tail())
		}
	})
}
