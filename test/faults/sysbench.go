package faults

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sysbench drives `sysbench oltp_read_write` through a plaintext tunnel
// to the agent until a deadline, in slices like Pgbench: sysbench stops
// at an error it does not ignore (a lost connection it cannot redo), so a
// new slice brings the threads back.
type Sysbench struct {
	// Addr is the tunnel's plaintext MySQL port.
	Addr    string
	Threads int
	// Rate is the total transactions per second asked (--rate); 0 runs as
	// fast as it can.
	Rate int
	// Slice is how long each run lasts (5s when zero).
	Slice time.Duration

	mu           sync.Mutex
	transactions int64
	runs         int
	errs         map[string]int
}

// sysbenchArgs are the options of every sysbench call on addr: one small
// table, statements sent as text (COM_QUERY) so that MariaDB's general
// log holds each as the agent audited it.
func sysbenchArgs(addr string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"oltp_read_write", "--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port,
		"--mysql-user=" + MyUser, "--mysql-db=" + MyDatabase, "--mysql-ssl=off", "--db-ps-mode=disable",
		"--tables=1", "--table-size=1000"}
}

// SysbenchPrepare creates sysbench's table through addr.
func SysbenchPrepare(ctx context.Context, addr string) error {
	cmd := exec.CommandContext(ctx, "sysbench", append(sysbenchArgs(addr), "prepare")...)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sysbench prepare: %v\n%s", err, out)
	}
	return nil
}

// Run runs slices until ctx ends or until.
func (s *Sysbench) Run(ctx context.Context, until time.Time) {
	slice := s.Slice
	if slice == 0 {
		slice = 5 * time.Second
	}
	for ctx.Err() == nil {
		left := time.Until(until)
		if left < time.Second {
			return
		}
		secs := int(min(slice, left) / time.Second)
		args := append(sysbenchArgs(s.Addr), "--threads="+strconv.Itoa(s.Threads), "--time="+strconv.Itoa(secs),
			"--mysql-ignore-errors=all", "--report-interval=0")
		if s.Rate > 0 {
			args = append(args, "--rate="+strconv.Itoa(s.Rate))
		}
		cmd := exec.CommandContext(ctx, "sysbench", append(args, "run")...)
		cmd.Env = childEnv()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		_ = cmd.Run()
		s.record(out.String())
		if time.Since(start) < 500*time.Millisecond {
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
}

var (
	sysbenchTransactions = regexp.MustCompile(`transactions:\s+(\d+)`)
	sysbenchIgnored      = regexp.MustCompile(`ignored errors:\s+(\d+)`)
)

// sysbenchIgnoredError stands for the statement errors sysbench ignored
// (--mysql-ignore-errors=all): it counts them without printing them.
const sysbenchIgnoredError = "statement errors ignored (the transaction retried)"

func (s *Sysbench) record(out string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs++
	if m := sysbenchTransactions.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		s.transactions += n
	}
	if s.errs == nil {
		s.errs = map[string]int{}
	}
	if m := sysbenchIgnored.FindStringSubmatch(out); m != nil {
		if n, _ := strconv.Atoi(m[1]); n > 0 {
			s.errs[sysbenchIgnoredError] += n
		}
	}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "FATAL:") || strings.HasPrefix(l, "WARNING:") {
			if strings.Contains(l, "thread") && strings.Contains(l, "failed to execute function") {
				continue
			}
			s.errs[NormalizeError(l)]++
		}
	}
}

// Transactions is the sum of the transactions the runs processed.
func (s *Sysbench) Transactions() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transactions
}

// Errors are the distinct errors sysbench reported, with counts.
func (s *Sysbench) Errors() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.errs))
	for k, v := range s.errs {
		out[k] = v
	}
	return out
}

// Tunnel is what `tg proxy db NAME --tunnel` does for MySQL: a local
// plaintext port whose connections are carried in TLS (the user's
// certificate, SNI the database's name) to the agent.
type Tunnel struct {
	ln  net.Listener
	wg  sync.WaitGroup
	cfg *tls.Config
	to  string
}

// NewTunnel listens on a free loopback port.
func NewTunnel(agentAddr, serverName, hostCA, cert, key string) (*Tunnel, error) {
	caPEM, err := os.ReadFile(hostCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", hostCA)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &Tunnel{ln: ln, to: agentAddr,
		cfg: &tls.Config{RootCAs: pool, ServerName: serverName, Certificates: []tls.Certificate{pair}}}
	go t.serve()
	return t, nil
}

// Addr is the plaintext port.
func (t *Tunnel) Addr() string { return t.ln.Addr().String() }

// Close stops accepting and waits for the connections to end.
func (t *Tunnel) Close() {
	t.ln.Close()
	t.wg.Wait()
}

func (t *Tunnel) serve() {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer c.Close()
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: t.cfg}
			up, err := d.Dial("tcp", t.to)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(up, c)
				_ = up.(*tls.Conn).CloseWrite()
				close(done)
			}()
			_, _ = io.Copy(c, up)
			c.Close()
			<-done
		}()
	}
}
