package load

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-db/tollgate/test/faults"
)

// ClientPlan is what the client process does, phase by phase; between
// phases it reports and waits for a line on its input, so the test can
// measure the agent at each step.
type ClientPlan struct {
	Agent  string
	HostCA string
	// Cert and Key are the load user's; StormCert and StormKey a second
	// user's, for the storm.
	Cert, Key           string
	StormCert, StormKey string
	Idle, Busy          int
	BusyFor             time.Duration
	// Storm connections per user, all started within StormWindow.
	Storm       int
	StormWindow time.Duration
}

// Report is what the client process prints after each phase, one JSON
// object per line.
type Report struct {
	Phase  string         `json:"phase"`
	OK     int            `json:"ok"`
	Errors map[string]int `json:"errors,omitempty"`
	// Busy phase: statements per busy session, sorted.
	PerSession []int   `json:"per_session,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`
	// Storm: refusals by SQLSTATE and message.
	Refused map[string]int `json:"refused,omitempty"`
}

// RunClient carries out plan, reporting on out and waiting on in.
func RunClient(plan ClientPlan, in io.Reader, out io.Writer) error {
	ctx := context.Background()
	wait := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	step := func(r Report) error {
		if err := enc.Encode(r); err != nil {
			return err
		}
		if !wait.Scan() {
			return errors.New("client: input closed")
		}
		return nil
	}
	cfg, err := faults.PgxConfig(plan.Agent, plan.HostCA, plan.Cert, plan.Key)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = 60 * time.Second

	// Idle sessions, opened 32 at a time.
	idle := make([]*pgx.Conn, plan.Idle)
	errs := &errorCount{m: map[string]int{}}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range idle {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				errs.add(err)
				return
			}
			idle[i] = c
		})
	}
	wg.Wait()
	if err := step(Report{Phase: "idle", OK: count(idle), Errors: errs.m}); err != nil {
		return err
	}

	// Busy sessions: each runs statements back to back.
	busy := make([]*pgx.Conn, plan.Busy)
	errs = &errorCount{m: map[string]int{}}
	for i := range busy {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				errs.add(err)
				return
			}
			busy[i] = c
		})
	}
	wg.Wait()
	per := make([]int, plan.Busy)
	var stop atomic.Bool
	start := time.Now()
	for i, c := range busy {
		if c == nil {
			continue
		}
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				if _, err := c.Exec(ctx, fmt.Sprintf("SELECT %d, 'busy %d'", n, i)); err != nil {
					errs.add(err)
					return
				}
				per[i]++
			}
		})
	}
	time.Sleep(plan.BusyFor)
	stop.Store(true)
	wg.Wait()
	secs := time.Since(start).Seconds()
	sort.Ints(per)
	if err := step(Report{Phase: "busy", OK: count(busy), Errors: errs.m, PerSession: per, Seconds: secs}); err != nil {
		return err
	}

	// Every idle session still answers.
	errs = &errorCount{m: map[string]int{}}
	var answered atomic.Int64
	for _, c := range idle {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := c.Exec(ctx, "SELECT 'still here'"); err != nil {
				errs.add(err)
				return
			}
			answered.Add(1)
		})
	}
	wg.Wait()
	if err := step(Report{Phase: "idle-answer", OK: int(answered.Load()), Errors: errs.m}); err != nil {
		return err
	}

	// The storm: new TLS connections of two users, all started within
	// the window, while the sessions above stay open.
	stormCfg, err := faults.PgxConfig(plan.Agent, plan.HostCA, plan.StormCert, plan.StormKey)
	if err != nil {
		return err
	}
	stormCfg.ConnectTimeout = 60 * time.Second
	refused := &errorCount{m: map[string]int{}}
	errs = &errorCount{m: map[string]int{}}
	var stormConns []*pgx.Conn
	var mu sync.Mutex
	total := 2 * plan.Storm
	gap := plan.StormWindow / time.Duration(total)
	start = time.Now()
	for i := range total {
		c := cfg
		if i%2 == 1 {
			c = stormCfg
		}
		time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
		wg.Go(func() {
			conn, err := pgx.ConnectConfig(ctx, c)
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					refused.addText(pe.Code + " " + faults.NormalizeError(pe.Message))
				} else {
					errs.add(err)
				}
				return
			}
			mu.Lock()
			stormConns = append(stormConns, conn)
			mu.Unlock()
		})
	}
	launched := time.Since(start).Seconds()
	wg.Wait()
	if err := step(Report{Phase: "storm", OK: len(stormConns), Errors: errs.m, Refused: refused.m, Seconds: launched}); err != nil {
		return err
	}

	for _, set := range [][]*pgx.Conn{idle, busy, stormConns} {
		for _, c := range set {
			if c != nil {
				c.Close(ctx)
			}
		}
	}
	return enc.Encode(Report{Phase: "closed"})
}

type errorCount struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorCount) add(err error) { e.addText(faults.NormalizeError(err.Error())) }

func (e *errorCount) addText(s string) {
	e.mu.Lock()
	e.m[s]++
	e.mu.Unlock()
}

func count(cs []*pgx.Conn) int {
	n := 0
	for _, c := range cs {
		if c != nil {
			n++
		}
	}
	return n
}
