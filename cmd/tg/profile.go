package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// What tg keeps, under ~/.tg (or $TG_HOME), directory mode 0700:
//
//	identity        the current login: key, user certificate, user and
//	                host CAs, proxy address (identity file format, 0600)
//	known_proxies   "HOST:PORT sha256:HEX" per line: the host CA each
//	                proxy showed at its first login (0600), checked at
//	                every later login like SSH's known_hosts
//
// Logging out removes identity; known_proxies stays.

// tgHome is the directory of tg's files.
func tgHome() (string, error) {
	if d := os.Getenv("TG_HOME"); d != "" {
		return d, nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory to keep the login in (set HOME or TG_HOME): %w", err)
	}
	return filepath.Join(h, ".tg"), nil
}

// ensureHome creates the directory with mode 0700, tightening it if it
// exists with a wider mode.
func ensureHome() (string, error) {
	d, err := tgHome()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(d, 0o700); err != nil {
		return "", err
	}
	return d, nil
}

func homeFile(name string) (string, error) {
	d, err := tgHome()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, name), nil
}

// errNotLoggedIn says there is no current login.
var errNotLoggedIn = errors.New("not logged in: run `tg login --proxy=HOST:PORT --user=NAME`, or pass an identity file with -i")

// currentIdentity loads the identity of -i FILE, or the login under
// ~/.tg. Expiry is checked with a message that says what to do.
func currentIdentity() (*identity.File, string, error) {
	path := flagIdentity
	fromLogin := path == ""
	if fromLogin {
		var err error
		if path, err = homeFile("identity"); err != nil {
			return nil, "", err
		}
	}
	data, err := os.ReadFile(path)
	if fromLogin && errors.Is(err, fs.ErrNotExist) {
		return nil, path, errNotLoggedIn
	}
	if err != nil {
		return nil, path, err
	}
	f, err := identity.ParseFile(data)
	if err != nil {
		return nil, path, fmt.Errorf("%s: %w", path, err)
	}
	return f, path, nil
}

// checkExpiry refuses an expired certificate, saying how to get a new one.
func checkExpiry(f *identity.File) error {
	if time.Now().Before(f.Cert.Leaf.NotAfter) {
		return nil
	}
	how := "log in again: tg login --proxy=" + f.ProxyAddr + " --user=" + f.Identity.User
	if flagIdentity != "" {
		how = "ask an administrator for a new identity file (tollgate auth sign --format=identity)"
	}
	return fmt.Errorf("the certificate of %s expired at %s; %s", f.Identity.User, f.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339), how)
}

// apiClient is a client of the proxy of f, presenting f's certificate and
// trusting only the host CA of f.
func apiClient(f *identity.File) (*api.Client, error) {
	if f.ProxyAddr == "" {
		return nil, errors.New("the identity names no proxy (Proxy: header); log in again with --proxy")
	}
	host, err := api.ServerName(f.ProxyAddr)
	if err != nil {
		return nil, err
	}
	return api.NewClient(f.ProxyAddr, api.TLSConfig(host, f.CAs, &f.Cert), userAgent())
}

func userAgent() string { return "tg/1" }

// withTimeout is the context of one tg command.
func withTimeout(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, 2*time.Minute)
}

// knownProxy returns the pinned host CA fingerprint of proxy, "" if none.
func knownProxy(proxy string) (string, error) {
	path, err := homeFile("known_proxies")
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == proxy {
			return api.ParsePin(f[1])
		}
	}
	return "", sc.Err()
}

// rememberProxy records proxy's host CA fingerprint, replacing an earlier
// one for the same proxy.
func rememberProxy(proxy, pin string) error {
	d, err := ensureHome()
	if err != nil {
		return err
	}
	path := filepath.Join(d, "known_proxies")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 1 && f[0] == proxy {
			continue
		}
		out.WriteString(sc.Text() + "\n")
	}
	fmt.Fprintf(&out, "%s %s\n", proxy, pin)
	return writePrivate(path, out.Bytes())
}

// writePrivate writes a file with mode 0600 atomically.
func writePrivate(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
