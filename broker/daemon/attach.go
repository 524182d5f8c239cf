package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/admin"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/broker/trail"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// Local is the broker of a data dir opened by an admin command for its
// duration.
type Local struct {
	Store     *state.Store
	CAs       *ca.Authorities
	Login     *login.Service
	Admin     *admin.Service
	Publisher *events.Publisher
	// JS reaches the streams (AUDIT for sessions, STATE for requests).
	JS jetstream.JetStream
	// Via says how the command reached NATS, for messages.
	Via string

	closers []func()
}

// LocalActor is who an admin command on the broker's machine is in the
// events: the operating-system user, with the editor role (whoever can read
// the data dir holds the CA keys anyway).
func LocalActor() state.Actor {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return state.Actor{User: "local:" + name, Roles: []string{"editor"}}
}

// Attach opens the broker state of cfg's data dir for an admin command:
//   - nats.urls set: the external NATS cluster;
//   - else the embedded server of a running `tollgate start`, at
//     nats.embedded.listen;
//   - else, when no broker runs on the data dir, an in-process NATS server
//     on its store for the command's duration (the data dir stays locked
//     meanwhile, so a daemon starting then waits).
func Attach(ctx context.Context, cfg *config.Config) (_ *Local, err error) {
	l := &Local{}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	var nc *nats.Conn
	startedHere := false
	listen := cfg.NATS.Embedded.Listen
	switch {
	case len(cfg.NATS.URLs) > 0:
		if nc, err = natsserver.Connect(cfg.NATS, natsserver.Broker); err != nil {
			return nil, err
		}
		l.Via = "NATS " + nc.ConnectedUrlRedacted()
	default:
		if listen != "" && listen != natsserver.InProcessOnly {
			// Admin commands act as the broker: whoever can read the data
			// dir holds its seed and the CA keys anyway.
			nc, err = natsserver.DialEmbedded(cfg, natsserver.Broker, nats.Name("tollgate-admin"))
			if err == nil {
				if sameBroker(ctx, nc, cfg.DataDir) {
					l.Via = "the running daemon's NATS at " + listen
					break
				}
				// Another broker's NATS (another data dir on the same
				// port): never write into it.
				nc.Close()
				nc = nil
			}
		}
		unlock, lerr := tryLock(lockPath(cfg.DataDir))
		if errors.Is(lerr, errLocked) {
			return nil, fmt.Errorf("a tollgate daemon runs on data dir %s but its NATS server is not reachable at nats.embedded.listen %q: give it a listen address, or run this command against its API with --identity FILE", cfg.DataDir, listen)
		}
		if lerr != nil {
			return nil, lerr
		}
		l.closers = append(l.closers, unlock)
		o, err := natsserver.FromConfig(cfg)
		if err != nil {
			return nil, err
		}
		o.Listen = natsserver.InProcessOnly
		srv, err := natsserver.Start(o)
		if err != nil {
			return nil, err
		}
		l.closers = append(l.closers, srv.Shutdown)
		if nc, err = srv.ConnectAs(natsserver.Broker); err != nil {
			return nil, err
		}
		startedHere = true
		l.Via = "an in-process NATS server on " + o.StoreDir
	}
	l.closers = append(l.closers, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if startedHere {
		so := events.StreamOptions{Replicas: cfg.NATS.Replicas, AuditMaxAge: cfg.NATS.AuditMaxAge.Std(), AuditMaxBytes: cfg.NATS.AuditMaxBytes}
		if err := events.EnsureStreams(ctx, js, so); err != nil {
			return nil, err
		}
	}
	l.JS = js
	if l.CAs, err = ca.Open(cfg.DataDir); err != nil {
		return nil, err
	}
	if l.Store, err = state.Open(ctx, js, cfg.ClusterName); err != nil {
		return nil, err
	}
	l.closers = append(l.closers, l.Store.Close)
	// Like the daemon, an admin command signs what it stores with a key of
	// its own certified by the host CA.
	signer, err := l.CAs.FrameSigner("broker-" + cfg.ClusterName)
	if err != nil {
		return nil, fmt.Errorf("broker: signing key: %w", err)
	}
	if l.Publisher, err = events.NewPublisher(js, cfg.ClusterName, events.WithAckTimeout(cfg.Audit.AckTimeout.Std()), events.WithSigner(signer)); err != nil {
		return nil, err
	}
	pub := l.Publisher
	l.closers = append(l.closers, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pub.Close(cctx)
	})
	l.Login = login.New(l.Store, l.CAs, l.Publisher, login.Options{Log: slog.New(slog.DiscardHandler)})
	l.Admin = admin.New(l.Store, l.CAs, l.Login, cfg.Proxy.PublicAddr)
	// db ls says online or offline from the proxies' routes; without the
	// bucket (no broker started since it exists) it goes by heartbeats.
	if pkv, perr := presence.Open(ctx, js); perr == nil {
		if pv, perr := presence.Watch(ctx, pkv); perr == nil {
			l.Admin.SetPresence(pv)
		}
	}
	if startedHere {
		// No daemon runs to copy this command's changes into AUDIT: do it
		// before the in-process server stops (and, should that fail, the
		// next broker to start does).
		tr, err := trail.Start(ctx, js, trail.WithSigner(signer))
		if err != nil {
			return nil, err
		}
		l.closers = append(l.closers, func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = tr.Sync(cctx)
			tr.Stop()
		})
	}
	return l, nil
}

// Close releases everything Attach opened, in reverse order.
func (l *Local) Close() {
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
	l.closers = nil
}

// sameBroker reports whether the NATS server of nc holds the state of the
// broker of dataDir: the user CA it published in STATE is the data dir's.
func sameBroker(ctx context.Context, nc *nats.Conn, dataDir string) bool {
	local, err := os.ReadFile(filepath.Join(dataDir, "ca", string(ca.User)+".crt"))
	if err != nil {
		return false
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return false
	}
	m, err := s.GetLastMsgForSubject(ctx, events.StateSubject(state.AggCA, string(ca.User)))
	if err != nil {
		return false
	}
	var ev events.CAPublish
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return false
	}
	return strings.TrimSpace(ev.CertPEM) == strings.TrimSpace(string(local))
}
