// Package rsyslogtest runs a real rsyslogd for tests: in a temporary
// directory, listening on loopback with imtcp (plain and, with the ossl
// stream driver, TLS), writing what it receives to a file.
package rsyslogtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/test/harness"
)

// Rsyslog is a running rsyslogd.
type Rsyslog struct {
	// Addr and TLSAddr are host:port of the plain and TLS inputs.
	Addr    string
	TLSAddr string
	// Out is the file it writes: one line per message, "MSGID SD MSG".
	Out string
	cmd *exec.Cmd
	log string
}

// Options configures Start.
type Options struct {
	// CAFile, CertFile and KeyFile enable the TLS input (ossl driver).
	CAFile, CertFile, KeyFile string
	// MaxMessageSize is rsyslog's maxMessageSize (default 4m here).
	MaxMessageSize string
	// Port of the plain input; a free one when zero.
	Port int
}

// Start starts rsyslogd; it is stopped when the test ends. A missing
// rsyslogd (or TLS driver, when asked for) fails the test.
func Start(t testing.TB, o Options) *Rsyslog {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/rsyslogd"); serr != nil {
			t.Fatalf("rsyslogd is not installed (Debian package rsyslog): %v", err)
		}
		bin = "/usr/sbin/rsyslogd"
	}
	if o.CertFile != "" {
		if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so"); err != nil {
			if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_ossl.so"); len(m) == 0 {
				t.Fatal("rsyslog's OpenSSL stream driver is not installed (Debian package rsyslog-openssl)")
			}
		}
	}
	if o.MaxMessageSize == "" {
		o.MaxMessageSize = "4m"
	}
	dir := t.TempDir()
	r := &Rsyslog{Out: filepath.Join(dir, "out.log"), log: filepath.Join(dir, "rsyslogd.log")}
	port := o.Port
	if port == 0 {
		port = harness.FreePort(t)
	}
	r.Addr = "127.0.0.1:" + strconv.Itoa(port)
	var conf strings.Builder
	fmt.Fprintf(&conf, "global(workDirectory=%q maxMessageSize=%q", dir, o.MaxMessageSize)
	if o.CertFile != "" {
		fmt.Fprintf(&conf, " defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q",
			o.CAFile, o.CertFile, o.KeyFile)
	}
	conf.WriteString(")\n")
	conf.WriteString("module(load=\"imtcp\")\n")
	fmt.Fprintf(&conf, "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\")\n", port)
	if o.CertFile != "" {
		tport := harness.FreePort(t)
		r.TLSAddr = "127.0.0.1:" + strconv.Itoa(tport)
		fmt.Fprintf(&conf, "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\" streamDriver.name=\"ossl\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n", tport)
	}
	conf.WriteString(`template(name="tg" type="list") {
  property(name="msgid") constant(value=" ")
  property(name="structured-data") constant(value=" ")
  property(name="msg") constant(value="\n")
}
`)
	fmt.Fprintf(&conf, "action(type=\"omfile\" file=%q template=\"tg\" asyncWriting=\"off\")\n", r.Out)
	confPath := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "-n", "-f", confPath, "-i", filepath.Join(dir, "rsyslogd.pid"))
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(r.log)
			t.Logf("rsyslogd output:\n%s\nconfiguration:\n%s", b, conf.String())
		}
	})
	for _, a := range []string{r.Addr, r.TLSAddr} {
		if a == "" {
			continue
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(r.log)
				t.Fatalf("rsyslogd is not listening on %s after 15s: %v\n%s", a, err, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return r
}

// Line is one message rsyslog wrote.
type Line struct {
	MsgID string
	SD    string
	Msg   []byte
}

// Lines reads what rsyslog wrote so far: whole lines only, since the
// last one may still be being written while the test reads.
func (r *Rsyslog) Lines(t testing.TB) []Line {
	t.Helper()
	data, err := os.ReadFile(r.Out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	var out []Line
	for b := range bytes.Lines(data) {
		b = bytes.TrimSuffix(b, []byte("\n"))
		id, rest, _ := bytes.Cut(b, []byte(" "))
		// SD ends at the first "] " outside a quoted value.
		end := sdEnd(rest)
		l := Line{MsgID: string(id)}
		if end < 0 {
			l.Msg = bytes.Clone(rest)
		} else {
			l.SD = string(rest[:end])
			l.Msg = bytes.Clone(bytes.TrimPrefix(rest[end:], []byte(" ")))
		}
		out = append(out, l)
	}
	return out
}

// sdEnd is the index just past the structured data at the start of b.
func sdEnd(b []byte) int {
	if len(b) > 0 && b[0] == '-' {
		return 1
	}
	in := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\' && in:
			i++
		case c == '"':
			in = !in
		case c == ']' && !in:
			if i+1 == len(b) || b[i+1] != '[' {
				return i + 1
			}
		}
	}
	return -1
}
