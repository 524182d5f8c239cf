package service_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
)

// readOnlyState is a JetStream whose publishes to state.> are refused, as
// NATS refuses them to an agent's identity; key-value heartbeats still go
// through.
type readOnlyState struct {
	jetstream.JetStream
	refused atomic.Int64
}

var errStateDenied = errors.New("nats: permissions violation for publish to state.>")

func (j *readOnlyState) Publish(ctx context.Context, subj string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasPrefix(subj, "state.") {
		j.refused.Add(1)
		return nil, errStateDenied
	}
	return j.JetStream.Publish(ctx, subj, data, opts...)
}

func (j *readOnlyState) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasPrefix(m.Subject, "state.") {
		j.refused.Add(1)
		return nil, errStateDenied
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// A joined agent whose NATS connection may not write STATE registers its
// databases through the broker's API, under its host certificate's id, and
// serves them; a second agent cannot take over a database the first still
// heartbeats.
func TestJoinedAgentRegistersThroughTheBroker(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := f.broker(ctx, t)
	joined := func() config.Config {
		acfg, tok := f.joiner(ctx, t, b)
		acfg.DBService.BrokerCAPin = tok.HostCAPin
		return acfg
	}
	js := &readOnlyState{JetStream: f.js}
	acfg := joined()
	s, err := service.Start(ctx, service.Options{Config: &acfg, JS: js, Recorder: f.pub, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	d, ok := b.Store.Database("pg1")
	if !ok || d.HostID != s.HostID || d.AgentAddr != s.PublicAddr || d.Expired(d.LastHeartbeat) {
		t.Fatalf("registration of pg1: %+v (agent %s at %s)", d, s.HostID, s.PublicAddr)
	}
	if n := js.refused.Load(); n != 0 {
		t.Fatalf("the joined agent tried to write STATE %d times", n)
	}
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	conn, err := connect(ctx, t, s.Addr, f.userTLS(t, "pg1", id), "app")
	if err != nil {
		t.Fatalf("through the joined agent: %v", err)
	}
	conn.Close(ctx)

	other := joined()
	_, err = service.Start(ctx, service.Options{Config: &other, JS: js, Recorder: f.pub, Log: quiet()})
	// Refused at its join already: no certificate names a database
	// another host serves (registration would refuse it next).
	if err == nil || !strings.Contains(err.Error(), `database "pg1" is served by host `+s.HostID) {
		t.Fatalf("a second agent serving pg1: %v", err)
	}
	if d, _ := b.Store.Database("pg1"); d.HostID != s.HostID {
		t.Fatalf("pg1 taken over: %+v", d)
	}
}

// Beside the broker, the process hands the agent its registration
// (Options.Register): the agent's own connection never writes STATE.
func TestLocalAgentRegistersThroughOptions(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js := &readOnlyState{JetStream: f.js}
	var mu sync.Mutex
	var names []string
	s, err := service.Start(ctx, service.Options{Config: f.cfg, JS: js, Recorder: f.pub, Log: quiet(),
		Register: func(ctx context.Context, d state.NewDatabase) error {
			mu.Lock()
			names = append(names, d.Name)
			mu.Unlock()
			_, err := f.store.RegisterDatabase(ctx, state.Actor{User: "tollgate:broker"}, d)
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := strings.Join(names, ",")
	mu.Unlock()
	if got != "pg1,crdb" || js.refused.Load() != 0 {
		t.Fatalf("registered %q through Options.Register, %d writes to STATE refused", got, js.refused.Load())
	}
	for _, n := range []string{"pg1", "crdb"} {
		if d, ok := f.store.Database(n); !ok || d.HostID != s.HostID {
			t.Fatalf("%s: %+v", n, d)
		}
	}
}
