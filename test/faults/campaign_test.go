package faults

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/exporters"
)

// fault is one row of the campaign: inject breaks something while load
// runs and returns when it has been repaired (the process restarted, the
// link back); recovered says how long the system took to work again.
type fault struct {
	name string
	// inject breaks and repairs; it returns when the repair was made and,
	// where the fault defines one, the recovery time it measured itself.
	inject func(ctx context.Context, s *Stack) (healed time.Time, recovery time.Duration, err error)
	// probeRecovery: recovery is the time from the repair to the first
	// statement audited and answered through the agent.
	probeRecovery bool
	// prepare runs before the load (the store-full fault sets a limit).
	prepare func(ctx context.Context, s *Stack) error
}

func faults(outage time.Duration) []fault {
	return []fault{
		{name: "none (baseline)", inject: func(context.Context, *Stack) (time.Time, time.Duration, error) {
			return time.Now(), 0, nil
		}},
		{name: fmt.Sprintf("NATS server SIGKILL, restarted after %s", outage), probeRecovery: true,
			inject: func(_ context.Context, s *Stack) (time.Time, time.Duration, error) {
				if err := s.NATS.Kill(); err != nil {
					return time.Time{}, 0, err
				}
				time.Sleep(outage)
				err := s.NATS.Start()
				return time.Now(), 0, err
			}},
		{name: "agent SIGKILL, restarted at once", probeRecovery: true,
			inject: func(_ context.Context, s *Stack) (time.Time, time.Duration, error) {
				if err := s.Agent.Kill(); err != nil {
					return time.Time{}, 0, err
				}
				healed := time.Now()
				return healed, 0, s.Agent.Start()
			}},
		{name: "broker SIGKILL, restarted after 2s",
			inject: func(_ context.Context, s *Stack) (time.Time, time.Duration, error) {
				if err := s.Broker.Kill(); err != nil {
					return time.Time{}, 0, err
				}
				time.Sleep(2 * time.Second)
				start := time.Now()
				err := s.Broker.Start()
				return start, time.Since(start), err
			}},
		{name: "exporter SIGKILL, restarted after 2s",
			inject: func(ctx context.Context, s *Stack) (time.Time, time.Duration, error) {
				if err := s.Exporter.Kill(); err != nil {
					return time.Time{}, 0, err
				}
				time.Sleep(2 * time.Second)
				start := time.Now()
				if err := s.Exporter.Start(); err != nil {
					return start, 0, err
				}
				// Recovered once it has confirmed everything stored when
				// it came back: its backlog, with the load still running.
				st, err := s.JS.Stream(ctx, "AUDIT")
				if err != nil {
					return start, 0, err
				}
				info, err := st.Info(ctx)
				if err != nil {
					return start, 0, err
				}
				backlog := info.State.LastSeq
				for {
					c, err := st.Consumer(ctx, exporters.ConsumerName("file"))
					if err == nil {
						if ci, err := c.Info(ctx); err == nil && ci.AckFloor.Stream >= backlog {
							return start, time.Since(start), nil
						}
					}
					if time.Since(start) > 3*time.Minute {
						return start, 0, fmt.Errorf("the exporter has not confirmed the events stored before its restart within 3 minutes")
					}
					time.Sleep(50 * time.Millisecond)
				}
			}},
		{name: fmt.Sprintf("agent cut from NATS for %s", outage), probeRecovery: true,
			inject: func(_ context.Context, s *Stack) (time.Time, time.Duration, error) {
				s.AgentLink.Cut()
				time.Sleep(outage)
				s.AgentLink.Restore()
				return time.Now(), 0, nil
			}},
		storeFull(outage),
	}
}

// storeFullError is what JetStream answered the publish that found the
// store full.
var storeFullError string

// storeFull fills JetStream's file store to the server's limit
// (max_file_store) with another stream, keeps it full, then frees it.
// Strict mode must refuse statements with a clear error while the store
// cannot take their events.
func storeFull(outage time.Duration) fault {
	// The headroom is what FILL takes, less what the load stores before
	// the fault, and so what the load has once FILL is deleted: it must
	// hold the rest of the run's events (~2.5 MB/s of them at the full
	// campaign's rates), or AUDIT itself fills the store after the repair
	// and nothing recovers.
	const headroom = 512 << 20
	return fault{name: fmt.Sprintf("JetStream store full (max_file_store) for %s", outage), probeRecovery: true,
		prepare: func(ctx context.Context, s *Stack) error {
			ai, err := s.JS.AccountInfo(ctx)
			if err != nil {
				return err
			}
			if err := s.NATS.SetMaxFileStore(int64(ai.Store) + headroom); err != nil {
				return err
			}
			if err := s.NATS.Stop(); err != nil {
				return err
			}
			return s.NATS.Start()
		},
		inject: func(ctx context.Context, s *Stack) (time.Time, time.Duration, error) {
			if _, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "FILL", Subjects: []string{"fill.>"}, Storage: jetstream.FileStorage}); err != nil {
				return time.Time{}, 0, err
			}
			chunk := make([]byte, 512<<10)
			for i := 0; ; i++ {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := s.JS.Publish(pctx, "fill.x", chunk)
				cancel()
				if err != nil {
					storeFullError = err.Error()
					break
				}
				if i > 4*headroom/len(chunk) {
					return time.Time{}, 0, errors.New("the store never filled up")
				}
			}
			time.Sleep(outage)
			err := s.JS.DeleteStream(ctx, "FILL")
			return time.Now(), 0, err
		},
	}
}

func TestFaultCampaign(t *testing.T) {
	bin := binaries(t)
	list := faults(cfg.outage)
	if !cfg.full {
		// The smoke run: one fault, the NATS server killed.
		list = list[1:2]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(list))*(cfg.duration+3*time.Minute)+5*time.Minute)
	defer cancel()
	s := NewStack(t, bin, StackOptions{Exporter: true, PGMaxConnections: 100, MariaDB: true})
	ledger := &Ledger{JS: s.JS, PG: s.PG, MariaDB: s.MariaDB, ExportFile: s.ExportFile}
	if _, err := exec.LookPath("sysbench"); err != nil {
		t.Fatal("sysbench is not installed (Debian: sysbench)")
	}
	tun, err := NewTunnel(s.AgentAddr, MyName, s.HostCAFile, s.UserCertFile, s.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	// The table is made through the agent too: every statement of the
	// load's MariaDB user is audited.
	if err := SysbenchPrepare(ctx, tun.Addr()); err != nil {
		t.Fatalf("%v\nagent:\n%s", err, s.Agent.LogTail())
	}
	if _, _, err := ledger.Check(ctx); err != nil {
		t.Fatal(err)
	}
	pcfg, err := PgxConfig(s.AgentAddr, s.HostCAFile, s.UserCertFile, s.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	header := []string{"fault", "statements in DB log", "audit events stored", "statements without event",
		"MariaDB statements in general log", "MariaDB statements without event",
		"delivered by exporter / stored", "refused statements", "ei gaps", "transactions (pgbench)", "transactions (sysbench)", "time to recover", "exporter done after the load", "what clients saw"}
	var rows [][]string
	var errorsSeen []string
	failed := false
	for _, f := range list {
		if f.prepare != nil {
			if err := f.prepare(ctx, s); err != nil {
				t.Fatalf("%s: prepare: %v", f.name, err)
			}
			if err := waitAgent(ctx, pcfg); err != nil {
				t.Fatalf("%s: the agent did not come back after preparing: %v\n%s", f.name, err, s.Agent.LogTail())
			}
		}
		start := time.Now()
		until := start.Add(cfg.duration)
		lctx, stopLoad := context.WithCancel(ctx)
		pb := &Pgbench{Env: s.ClientEnv(), Clients: cfg.clients, Rate: cfg.rate}
		probe := &Probe{Config: pcfg, Interval: 100 * time.Millisecond}
		sb := &Sysbench{Addr: tun.Addr(), Threads: cfg.sbThreads, Rate: cfg.sbRate, Slice: pb.Slice}
		loadDone := make(chan struct{})
		go func() {
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); pb.Run(lctx, until) }()
			go func() { defer wg.Done(); sb.Run(lctx, until) }()
			wg.Wait()
			close(loadDone)
		}()
		go probe.Run(lctx)

		time.Sleep(cfg.duration / 3)
		injected := time.Now()
		healed, recovery, err := f.inject(ctx, s)
		if err != nil {
			stopLoad()
			t.Fatalf("%s: %v\nagent:\n%s\nnats:\n%s", f.name, err, s.Agent.LogTail(), natsTail(s))
		}
		<-loadDone
		if f.probeRecovery {
			// The probe runs on until it has answered after the repair.
			deadline := time.Now().Add(2 * time.Minute)
			for {
				if ok, found := probe.FirstOKAfter(healed); found {
					recovery = ok.Sub(healed)
					break
				}
				if time.Now().After(deadline) {
					stopLoad()
					t.Fatalf("%s: nothing answered through the agent within 2 minutes of the repair; probe errors %v\n%s", f.name, probe.Errors(), s.Agent.LogTail())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		stopLoad()
		checkStart := time.Now()
		catchUp, derr := ledger.WaitDelivered(ctx, 3*time.Minute)
		_, d, err := ledger.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: exporter caught up in %s, checked in %s", f.name, catchUp.Round(time.Millisecond), time.Since(checkStart).Round(time.Millisecond))
		clientErrs := pb.Errors()
		for k, v := range probe.Errors() {
			clientErrs["(probe) "+k] += v
		}
		for k, v := range sb.Errors() {
			clientErrs["(sysbench) "+k] += v
		}
		top := TopErrors(clientErrs, 3)
		seen := "none"
		if len(top) > 0 {
			seen = shorten(top[0], 140)
		}
		for _, e := range top {
			errorsSeen = append(errorsSeen, fmt.Sprintf("- %s: %s", f.name, shorten(e, 300)))
		}
		if f.prepare != nil && storeFullError != "" {
			errorsSeen = append(errorsSeen, fmt.Sprintf("- %s: JetStream answered the filling publish: %s", f.name, storeFullError))
		}
		row := []string{f.name, fmt.Sprint(d.Statements), fmt.Sprint(d.Events), fmt.Sprint(d.Missing),
			fmt.Sprint(d.MyStatements), fmt.Sprint(d.MyMissing),
			fmt.Sprintf("%d / %d", d.Delivered, d.Events-d.DuplicateIDs), fmt.Sprint(d.Refused), fmt.Sprint(d.Gaps),
			fmt.Sprint(pb.Transactions()), fmt.Sprint(sb.Transactions()), recovery.Round(10 * time.Millisecond).String(), catchUp.Round(100 * time.Millisecond).String(), seen}
		rows = append(rows, row)
		t.Logf("%s (injected %s after start): %v", f.name, injected.Sub(start).Round(time.Second), row)
		// The promise: no statement without its event, every event
		// delivered, nothing stored twice.
		switch {
		case d.Statements == 0:
			t.Errorf("%s: no statement reached the database: the load did not run", f.name)
			failed = true
		case d.Missing != 0:
			t.Errorf("%s: %d statements in the database log have no audit event", f.name, d.Missing)
			failed = true
		case d.MyStatements == 0:
			t.Errorf("%s: no statement reached MariaDB: sysbench did not run", f.name)
			failed = true
		case d.MyMissing != 0:
			t.Errorf("%s: %d statements in MariaDB's general log have no audit event", f.name, d.MyMissing)
			failed = true
		case derr != nil:
			t.Errorf("%s: %v", f.name, derr)
			failed = true
		case d.DuplicateIDs != 0:
			t.Errorf("%s: %d event ids stored twice", f.name, d.DuplicateIDs)
			failed = true
		}
	}
	table := Table(header, rows)
	t.Logf("fault campaign (%d pgbench clients at %d tps asked, %d sysbench threads at %d tps asked, %s per fault):\n%s",
		cfg.clients, cfg.rate, cfg.sbThreads, cfg.sbRate, cfg.duration, table)
	if failed {
		return
	}
	report.Add(fmt.Sprintf("## Fault campaign\n\n"+
		"`TOLLGATE_FAULTS=1 go test ./test/faults -run TestFaultCampaign` (part of `make faults`): pgbench (%d clients, simple protocol, %d transactions/s asked, "+
		"restarted in 5 s slices because pgbench ends a client at its first error), "+
		"`sysbench oltp_read_write` on MariaDB (%d threads, %d transactions/s asked, text statements, `--mysql-ignore-errors=all`, restarted in 5 s slices likewise) "+
		"through a plaintext tunnel carried in TLS to the agent (what `tg proxy db my --tunnel` does) and a probe (one numbered statement every 100 ms, reconnecting) "+
		"through the agent in strict mode, %s per fault, the fault injected a third of the way in. "+
		"Statements are those of the load's database users in PostgreSQL's own log and in MariaDB's general_log (Query and Execute commands); an event of a statement counts only if the statement was not refused. "+
		"\"ei gaps\" are event indexes missing inside sessions (result events of statements answered just before the agent died: results are published after the answer, statements before it). "+
		"Time to recover: from the repair to the first statement audited and answered through the agent (agent: from the SIGKILL, the restart being immediate; broker: from its restart to its API listening; exporter: from its restart to its consumer's acknowledgement floor reaching the last event stored at the restart, the load still running).\n\n%s\n"+
		"What clients saw, by fault (most frequent first; N stands for numbers):\n\n%s\n",
		cfg.clients, cfg.rate, cfg.sbThreads, cfg.sbRate, cfg.duration, table, strings.Join(errorsSeen, "\n")))
}

// waitAgent waits until a statement goes through the agent.
func waitAgent(ctx context.Context, c *pgx.ConnConfig) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		if last = pingAgent(ctx, c); last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

func natsTail(s *Stack) string {
	if s.NATS == nil {
		return ""
	}
	return s.NATS.LogTail()
}

func shorten(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
