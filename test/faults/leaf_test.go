package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// TestLeafCut runs an agent whose embedded NATS server is a leaf node of a
// hub, with its own JetStream domain, and cuts the link to the hub under
// load: strict auditing must go on locally (nothing refused), and once
// the link is back the hub's AUDIT stream must hold every event the leaf
// stored, once, and every statement of the database log.
func TestLeafCut(t *testing.T) {
	if !cfg.full {
		t.Log("the leaf cut under load is part of the full campaign (TOLLGATE_FAULTS=1); events/natsserver tests the leaf mechanism")
		return
	}
	bin := binaries(t)
	d, cut := cfg.duration, cfg.leafCut
	if d < cut+cut/2 {
		d = cut + cut/2
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Minute)
	defer cancel()
	dir := t.TempDir()

	hub, err := StartNATS(bin.NATSServer, NATSOptions{Name: "hub", Dir: filepath.Join(dir, "hub"), Domain: "hub", Leafnodes: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	hnc, err := nats.Connect(hub.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer hnc.Close()
	hjs, _ := jetstream.New(hnc)
	// The hub's own processes (broker, exporters) make its streams.
	if err := events.EnsureStreams(ctx, hjs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	link, err := NewLink("127.0.0.1:" + strconv.Itoa(hub.LeafPort))
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()

	data := filepath.Join(dir, "data")
	cas, err := ca.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	pg := StartPostgres(t, cas, 100, 1)
	hostCA, cert, key := UserFiles(t, cas, dir, TollgateUser)
	agentAddr, leafNATS := freeAddr(t), freeAddr(t)
	conf := WriteConfig(t, filepath.Join(dir, "leaf.yaml"), ConfigParams{DataDir: data, ProxyListen: freeAddr(t), AgentListen: agentAddr,
		PGAddr: pg.Addr(), PGCAFile: pg.ServerCAFile,
		Embedded: fmt.Sprintf("  embedded:\n    listen: %q\n  leaf:\n    hub_urls: [%q]\n    domain: site1\n", leafNATS, link.Addr())})
	// Broker, agent and leaf role in one process: the agent's site.
	site := &Node{Name: "leaf site", Bin: bin.Tollgate, Config: conf, Ready: dialable(agentAddr), Log: filepath.Join(dir, "leaf.log")}
	if err := site.Start(); err != nil {
		t.Fatalf("%v\n%s", err, site.LogTail())
	}
	t.Cleanup(func() { _ = site.Stop() })
	// The site's own server authenticates every part: the auditor reads.
	creds, err := natsserver.LoadCredentials(filepath.Join(data, "nats-auth"))
	if err != nil {
		t.Fatal(err)
	}
	as, err := creds.Options(natsserver.Auditor)
	if err != nil {
		t.Fatal(err)
	}
	lnc, err := nats.Connect("tls://"+leafNATS, append(as, nats.MaxReconnects(-1), nats.RootCAs(filepath.Join(creds.Dir, natsserver.TLSCertFile)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer lnc.Close()
	ljs, _ := jetstream.New(lnc)
	// The hub's source copies the leaf's messages one for one, so the
	// catch-up is counted in messages (frames of events).
	msgs := func(js jetstream.JetStream) uint64 {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := js.Stream(ictx, events.AuditStream)
		if err != nil {
			return 0
		}
		info, err := st.Info(ictx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	// The leaf role adds the source once it reaches the hub.
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := hjs.Stream(ctx, events.AuditStream)
		if err == nil && len(st.CachedInfo().Config.Sources) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub's AUDIT stream never got the leaf as a source\n%s", site.LogTail())
		}
		time.Sleep(200 * time.Millisecond)
	}

	var cutAt, restoredAt time.Time
	var atCut, atRestore, hubAtRestore uint64
	run := runLoad(ctx, t, ClientEnv(agentAddr, hostCA, cert, key), agentAddr, hostCA, cert, key, d, cfg.rate, func() {
		atCut = msgs(ljs)
		link.Cut()
		cutAt = time.Now()
		time.Sleep(cut)
		atRestore, hubAtRestore = msgs(ljs), msgs(hjs)
		link.Restore()
		restoredAt = time.Now()
	})
	// Catch-up: the hub holds everything the leaf had stored by the
	// restore, then everything.
	var caughtUp time.Duration
	deadline = time.Now().Add(5 * time.Minute)
	for msgs(hjs) < atRestore {
		if time.Now().After(deadline) {
			t.Fatalf("hub holds %d messages, the leaf had %d at the restore", msgs(hjs), atRestore)
		}
		time.Sleep(50 * time.Millisecond)
	}
	caughtUp = time.Since(restoredAt)
	for msgs(hjs) < msgs(ljs) {
		if time.Now().After(deadline) {
			t.Fatalf("hub holds %d messages, the leaf %d", msgs(hjs), msgs(ljs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	leafN, hubN := msgs(ljs), msgs(hjs)
	l := &Ledger{JS: hjs, PG: pg}
	now, _, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if now.Statements == 0 || now.Missing != 0 || now.DuplicateIDs != 0 || now.Refused != 0 || hubN != leafN {
		t.Errorf("leaf cut: %d statements, %d without event in the hub, %d ids twice, %d refused; hub %d messages, leaf %d",
			now.Statements, now.Missing, now.DuplicateIDs, now.Refused, hubN, leafN)
	}
	duringCut := atRestore - atCut
	table := Table([]string{"cut", "statements in DB log", "messages at the leaf", "messages at the hub", "stored at the leaf during the cut",
		"reached the hub during the cut", "statements without event (hub)", "ids twice (hub)", "refused", "pgbench tps", "hub caught up after the restore"},
		[][]string{{cut.String(), fmt.Sprint(now.Statements), fmt.Sprint(leafN), fmt.Sprint(hubN), fmt.Sprint(duringCut),
			fmt.Sprint(hubAtRestore - min(hubAtRestore, atCut)), fmt.Sprint(now.Missing), fmt.Sprint(now.DuplicateIDs), fmt.Sprint(now.Refused),
			fmt.Sprintf("%.0f", run.tps(d)), caughtUp.Round(10 * time.Millisecond).String()}})
	t.Logf("leaf cut at %s:\n%s", cutAt.Sub(run.start).Round(time.Second), table)
	if !t.Failed() {
		report.Add(fmt.Sprintf("## Agent leaf mode: cut from the hub\n\n`TOLLGATE_FAULTS=1 go test ./test/faults -run TestLeafCut`: the agent's process (broker, agent and leaf roles) embeds NATS as a leaf node "+
			"(`nats.leaf: {hub_urls, domain: site1}`) of a hub nats-server (JetStream domain `hub`); the hub's AUDIT stream sources the leaf's. "+
			"pgbench (%d clients, %d transactions/s asked) and the probe run for %s in strict mode; the link to the hub is cut for %s a third of the way in. "+
			"Strict auditing acknowledges from the leaf's own store, so nothing is refused; the hub resumes its source where it stopped.\n\n%s",
			cfg.clients, cfg.rate, d, cut, table))
	}
}
