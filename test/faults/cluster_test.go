package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// loadRun is one load of the cluster and leaf runs: pgbench and the probe
// for d, with fault called a third of the way in (nil: none).
type loadRun struct {
	pb    *Pgbench
	probe *Probe
	start time.Time
	// healed is when fault returned.
	healed time.Time
}

func runLoad(ctx context.Context, t *testing.T, env []string, agentAddr, hostCA, cert, key string, d time.Duration, rate int, fault func()) *loadRun {
	t.Helper()
	pcfg, err := PgxConfig(agentAddr, hostCA, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	r := &loadRun{pb: &Pgbench{Env: env, Clients: cfg.clients, Rate: rate}, probe: &Probe{Config: pcfg, Interval: 100 * time.Millisecond}, start: time.Now()}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() { r.pb.Run(lctx, r.start.Add(d)); close(done) }()
	go r.probe.Run(lctx)
	if fault != nil {
		time.Sleep(d / 3)
		fault()
		r.healed = time.Now()
	}
	<-done
	return r
}

// tps is the transactions per second pgbench processed over d.
func (r *loadRun) tps(d time.Duration) float64 { return float64(r.pb.Transactions()) / d.Seconds() }

// TestClusterR3 runs the load as fast as it goes on a single NATS server
// with R1 streams and on a three-node cluster with R3 streams, then again
// on the cluster with one node SIGKILLed a third of the way in and
// restarted at two thirds: nothing may be lost, and the report gives the
// throughput of each.
func TestClusterR3(t *testing.T) {
	if !cfg.full {
		t.Log("the cluster run is part of the full campaign (TOLLGATE_FAULTS=1); the R3 node loss is tested in events/natsserver")
		return
	}
	bin := binaries(t)
	d := cfg.duration
	ctx, cancel := context.WithTimeout(context.Background(), 6*d+10*time.Minute)
	defer cancel()
	type result struct {
		name     string
		tps      float64
		totals   Totals
		recovery string
		errs     []string
	}
	var results []result
	check := func(name string, s *Stack, r *loadRun, recovery string) {
		l := &Ledger{JS: s.JS, PG: s.PG}
		now, _, err := l.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if now.Statements == 0 || now.Missing != 0 || now.DuplicateIDs != 0 {
			t.Errorf("%s: %d statements, %d without event, %d ids stored twice", name, now.Statements, now.Missing, now.DuplicateIDs)
		}
		errs := r.pb.Errors()
		for k, v := range r.probe.Errors() {
			errs["(probe) "+k] += v
		}
		results = append(results, result{name, r.tps(d), now, recovery, TopErrors(errs, 2)})
		t.Logf("%s: %.0f tps, %+v", name, r.tps(d), now)
	}

	r1 := NewStack(t, bin, StackOptions{PGMaxConnections: 100})
	check("single server, R1", r1, runLoad(ctx, t, r1.ClientEnv(), r1.AgentAddr, r1.HostCAFile, r1.UserCertFile, r1.UserKeyFile, d, 0, nil), "-")
	stopStack(t, r1)

	nodes, err := StartNATSCluster(bin.NATSServer, filepath.Join(t.TempDir(), "cluster"), 3)
	for _, n := range nodes {
		if n != nil {
			t.Cleanup(func() { _ = n.Stop() })
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{nodes[0].URL(), nodes[1].URL(), nodes[2].URL()}
	r3 := NewStack(t, bin, StackOptions{NATSURLs: urls, Replicas: 3, PGMaxConnections: 100})
	run := runLoad(ctx, t, r3.ClientEnv(), r3.AgentAddr, r3.HostCAFile, r3.UserCertFile, r3.UserKeyFile, d, 0, nil)
	check("3-node cluster, R3", r3, run, "-")

	// The node that leads the AUDIT stream is the one whose loss matters.
	victim := 0
	if info, err := r3.JS.Stream(ctx, "AUDIT"); err == nil && info.CachedInfo().Cluster != nil {
		for i, n := range nodes {
			if n.o.Name == info.CachedInfo().Cluster.Leader {
				victim = i
			}
		}
	}
	var killedAt time.Time
	run = runLoad(ctx, t, r3.ClientEnv(), r3.AgentAddr, r3.HostCAFile, r3.UserCertFile, r3.UserKeyFile, d, 0, func() {
		if err := nodes[victim].Kill(); err != nil {
			t.Error(err)
		}
		killedAt = time.Now()
		time.Sleep(d / 3)
		if err := nodes[victim].Start(); err != nil {
			t.Error(err)
		}
	})
	// Recovery: the first statement answered after the node died.
	rec := "never"
	if ok, found := run.probe.FirstOKAfter(killedAt); found {
		rec = ok.Sub(killedAt).Round(10 * time.Millisecond).String()
	}
	check(fmt.Sprintf("3-node cluster, R3, AUDIT leader (%s) SIGKILLed for %s", nodes[victim].o.Name, d/3), r3, run, rec)

	var rows [][]string
	for _, r := range results {
		ratio := "1.00"
		if results[0].tps > 0 {
			ratio = fmt.Sprintf("%.2f", r.tps/results[0].tps)
		}
		seen := "none"
		if len(r.errs) > 0 {
			seen = shorten(r.errs[0], 140)
		}
		rows = append(rows, []string{r.name, fmt.Sprintf("%.0f", r.tps), ratio, fmt.Sprint(r.totals.Statements), fmt.Sprint(r.totals.Events),
			fmt.Sprint(r.totals.Missing), fmt.Sprint(r.totals.DuplicateIDs), fmt.Sprint(r.totals.Refused), r.recovery, seen})
	}
	table := Table([]string{"NATS", "pgbench tps", "vs R1", "statements in DB log", "audit events", "statements without event",
		"ids stored twice", "refused", "first answer after the kill", "what clients saw"}, rows)
	t.Logf("\n%s", table)
	if !t.Failed() {
		report.Add(fmt.Sprintf("## NATS cluster: R3 against R1\n\n`TOLLGATE_FAULTS=1 go test ./test/faults -run TestClusterR3`: pgbench (%d clients, as fast as it goes, %s per row) through the agent in strict mode; "+
			"the agent is given every node's URL. R1 runs on one nats-server, R3 on three nats-server processes joined in a cluster. "+
			"Cumulative counts on the cluster rows (the second R3 row includes the first).\n\n%s", cfg.clients, d, table))
	}
}

// stopStack stops a stack's processes before the test ends, so the next
// measurement has the machine to itself.
func stopStack(t *testing.T, s *Stack) {
	t.Helper()
	for _, n := range []*Node{s.Exporter, s.Agent, s.Broker} {
		if n != nil {
			if err := n.Stop(); err != nil {
				t.Logf("stop %s: %v", n.Name, err)
			}
		}
	}
	if s.NATS != nil {
		_ = s.NATS.Stop()
	}
	_ = s.PG.Stop()
}
