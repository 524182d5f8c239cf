package faults

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Pgbench drives pgbench (TPC-B-like, simple protocol unless Mode says
// otherwise) through the agent until a deadline, in slices: pgbench ends a
// client at its first error (a refused statement, a lost connection), so a
// new slice brings the clients back.
type Pgbench struct {
	Env     []string
	Clients int
	// Rate is the total transactions per second asked of pgbench (-R);
	// 0 runs as fast as it can.
	Rate int
	// Slice is how long each pgbench run lasts (5s when zero).
	Slice time.Duration
	// Mode is pgbench's query mode (-M): simple when empty, extended or
	// prepared.
	Mode string

	mu           sync.Mutex
	transactions int64
	runs         int
	errs         map[string]int
}

// Run runs slices until ctx ends or until.
func (p *Pgbench) Run(ctx context.Context, until time.Time) {
	slice := p.Slice
	if slice == 0 {
		slice = 5 * time.Second
	}
	for ctx.Err() == nil {
		left := time.Until(until)
		if left < time.Second {
			return
		}
		secs := int(min(slice, left) / time.Second)
		mode := p.Mode
		if mode == "" {
			mode = "simple"
		}
		args := []string{"-n", "-M", mode, "-c", strconv.Itoa(p.Clients), "-j", "2", "-T", strconv.Itoa(secs)}
		if p.Rate > 0 {
			args = append(args, "-R", strconv.Itoa(p.Rate))
		}
		cmd := exec.CommandContext(ctx, "pgbench", args...)
		cmd.Env = p.Env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		start := time.Now()
		_ = cmd.Run()
		p.record(out.String(), errb.String())
		// A run that could not start (agent down) is retried soon, not in
		// a busy loop.
		if time.Since(start) < 500*time.Millisecond {
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
}

var (
	pgbenchProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	digits           = regexp.MustCompile(`\d+`)
	clientPrefix     = regexp.MustCompile(`^pgbench: (error: )?client \d+ (script \d+ )?aborted in command \d+ \(\w+\) of script \d+; `)
)

func (p *Pgbench) record(stdout, stderr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs++
	if m := pgbenchProcessed.FindStringSubmatch(stdout); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		p.transactions += n
	}
	if p.errs == nil {
		p.errs = map[string]int{}
	}
	// A message starts with "pgbench:"; libpq's own messages go on over
	// the following lines.
	var msgs []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
		case strings.HasPrefix(l, "pgbench:"):
			msgs = append(msgs, l)
		case len(msgs) > 0:
			msgs[len(msgs)-1] += " " + l
		}
	}
	for _, m := range msgs {
		if strings.HasPrefix(m, "pgbench: warning") || strings.Contains(m, "Run was aborted") {
			continue
		}
		p.errs[NormalizeError(clientPrefix.ReplaceAllString(m, ""))]++
	}
}

// Transactions is the sum of the transactions the runs processed.
func (p *Pgbench) Transactions() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.transactions
}

// Errors are the distinct errors the clients reported, with counts.
func (p *Pgbench) Errors() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.errs))
	for k, v := range p.errs {
		out[k] = v
	}
	return out
}

// NormalizeError makes errors that differ only in numbers one.
func NormalizeError(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return digits.ReplaceAllString(s, "N")
}

// Probe sends one numbered statement through the agent every interval
// (reconnecting after any error) and remembers when each succeeded, to
// tell how long the path took to recover after a fault.
type Probe struct {
	Config   *pgx.ConnConfig
	Interval time.Duration

	mu    sync.Mutex
	oks   []time.Time
	errs  map[string]int
	count int
}

// Run probes until ctx ends.
func (p *Probe) Run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(qctx, p.Config)
		}
		if err == nil {
			_, err = conn.Exec(qctx, fmt.Sprintf("SELECT 'probe %d'", n))
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.count++
		if err == nil {
			p.oks = append(p.oks, time.Now())
		} else {
			if p.errs == nil {
				p.errs = map[string]int{}
			}
			p.errs[NormalizeError(err.Error())]++
		}
		p.mu.Unlock()
		if err != nil && conn != nil {
			conn.Close(context.Background())
			conn = nil
		}
	}
}

// FirstOKAfter is the first success at or after t; false if none.
func (p *Probe) FirstOKAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := sort.Search(len(p.oks), func(i int) bool { return !p.oks[i].Before(t) })
	if i == len(p.oks) {
		return time.Time{}, false
	}
	return p.oks[i], true
}

// Errors are the distinct errors the probe saw.
func (p *Probe) Errors() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.errs))
	for k, v := range p.errs {
		out[k] = v
	}
	return out
}

// PgxConfig is a pgx configuration reaching the agent at agentAddr under
// the database's name (pgx has no hostaddr: the name resolves to the
// agent's address), with the simple protocol so that statements are
// logged and audited as sent.
func PgxConfig(agentAddr, hostCA, cert, key string) (*pgx.ConnConfig, error) {
	host, port, _ := strings.Cut(agentAddr, ":")
	c, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s connect_timeout=10",
		PGName, port, DBUser, hostCA, cert, key))
	if err != nil {
		return nil, err
	}
	c.LookupFunc = func(context.Context, string) ([]string, error) { return []string{host}, nil }
	c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return c, nil
}

// pingAgent runs one statement through the agent on a new connection.
func pingAgent(ctx context.Context, c *pgx.ConnConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT 'ping'")
	return err
}
