package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/faults"
	"github.com/tollgate-db/tollgate/test/harness"
)

// tollgateBin is the daemon built once for the package, tgBin the
// user's client.
var tollgateBin, tgBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-security-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tollgateBin = filepath.Join(dir, "tollgate")
	if out, err := exec.Command("go", "build", "-o", tollgateBin, "../../cmd/tollgate").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	tgBin = filepath.Join(dir, "tg")
	if out, err := exec.Command("go", "build", "-o", tgBin, "../../cmd/tg").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is `tollgate start` (broker and agent in one process, the embedded
// NATS server on a loopback port, as a fresh install runs) in front of a
// real PostgreSQL that logs every statement.
type world struct {
	t                              testing.TB
	dir, dataDir, config           string
	natsAddr, proxyAddr, agentAddr string
	cas                            *ca.Authorities
	pg                             *harness.PostgresServer
	node                           *faults.Node
	creds                          *natsserver.Credentials
	// hostCA, userCert and userKey are a client's files for the user
	// faults.TollgateUser.
	hostCA, userCert, userKey string
}

func newWorld(t *testing.T) *world { return newWorldOn(t, t.TempDir()) }

// newWorldOn is newWorld on the data dir dir/data, which may hold what an
// earlier version wrote.
func newWorldOn(t *testing.T, dir string) *world {
	t.Helper()
	w := &world{t: t, dir: dir}
	w.dataDir = filepath.Join(w.dir, "data")
	var err error
	if w.cas, err = ca.Open(w.dataDir); err != nil {
		t.Fatal(err)
	}
	w.pg = faults.StartPostgres(t, w.cas, 0, 1)
	w.hostCA, w.userCert, w.userKey = faults.UserFiles(t, w.cas, w.dir, faults.TollgateUser)
	w.natsAddr, w.proxyAddr, w.agentAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	w.config = faults.WriteConfig(t, filepath.Join(w.dir, "tollgate.yaml"), faults.ConfigParams{
		DataDir: w.dataDir, ProxyListen: w.proxyAddr, AgentListen: w.agentAddr,
		PGAddr: w.pg.Addr(), PGCAFile: w.pg.ServerCAFile,
		Embedded: fmt.Sprintf("  embedded:\n    listen: %q\n", w.natsAddr),
	})
	w.node = &faults.Node{Name: "all-in-one", Bin: tollgateBin, Config: w.config,
		Ready: func() error { return errors.Join(dial(w.agentAddr), dial(w.proxyAddr)) }, Log: filepath.Join(w.dir, "tollgate.log")}
	if err := w.node.Start(); err != nil {
		t.Fatalf("%v\n%s", err, w.node.LogTail())
	}
	t.Cleanup(func() { _ = w.node.Stop() })
	if w.creds, err = natsserver.LoadCredentials(filepath.Join(w.dataDir, "nats-auth")); err != nil {
		t.Fatal(err)
	}
	return w
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// as connects to the event store with part p's identity, as a process
// holding only that part's seed would; errs receives what the server
// reports asynchronously (permission violations).
func (w *world) as(p natsserver.Part) (*nats.Conn, jetstream.JetStream, chan error) {
	w.t.Helper()
	opts, err := w.creds.Options(p)
	if err != nil {
		w.t.Fatal(err)
	}
	errs := make(chan error, 32)
	opts = append(opts, nats.RootCAs(filepath.Join(w.creds.Dir, natsserver.TLSCertFile)), nats.Timeout(2*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	nc, err := nats.Connect("tls://"+w.natsAddr, opts...)
	if err != nil {
		w.t.Fatalf("connect as %s: %v", p, err)
	}
	w.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		w.t.Fatal(err)
	}
	return nc, js, errs
}

// refused asserts that an operation failed because the server refused
// it: err is set (or the operation has no synchronous answer) and the
// server reported a permissions violation.
func refused(t testing.TB, what string, err error, errs chan error) {
	t.Helper()
	select {
	case e := <-errs:
		if !errors.Is(e, nats.ErrPermissionViolation) && !strings.Contains(e.Error(), "Permissions Violation") {
			t.Fatalf("%s: failed with %v, server said %v (want a permissions violation)", what, err, e)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("%s: the server reported no permissions violation (operation returned %v)", what, err)
	}
}

// query runs sql through the agent as the user of cert and key.
func (w *world) query(cert, key, sql string) error {
	cfg, err := faults.PgxConfig(w.agentAddr, w.hostCA, cert, key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// logged reports whether PostgreSQL's statement log holds a statement
// containing s.
func (w *world) logged(s string) bool {
	w.t.Helper()
	stmts, err := w.pg.StatementLog()
	if err != nil {
		w.t.Fatal(err)
	}
	for _, q := range stmts {
		if strings.Contains(q, s) {
			return true
		}
	}
	return false
}

// auditCount is the number of events stored in AUDIT under filter, only
// those of type typ when it is set. A message is a frame of many events or
// one event on its own: each event counts, and only its type tells what it
// is, as a frame's subject names its writer.
func auditCount(t testing.TB, js jetstream.JetStream, filter, typ string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) == 0 {
		return 0
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	it, err := c.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var n uint64
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			t.Fatalf("reading AUDIT under %s: %v", filter, err)
		}
		err = events.SplitEvents(m.Data(), func(ev []byte) error {
			var h struct{ Type string }
			if typ != "" {
				if err := json.Unmarshal(ev, &h); err != nil {
					return err
				}
			}
			if typ == "" || h.Type == typ {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatalf("AUDIT %s: %v", m.Subject(), err)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if md.NumPending == 0 {
			return n
		}
	}
}

// tollgate runs an admin command on the world's configuration.
func (w *world) tollgate(args ...string) (string, error) {
	cmd := exec.Command(tollgateBin, append([]string{"--config", w.config}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stdout runs an admin command and returns its standard output alone (its
// standard error too when it fails).
func (w *world) stdout(args ...string) (string, error) {
	cmd := exec.Command(tollgateBin, append([]string{"--config", w.config}, args...)...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return string(out) + errb.String(), err
	}
	return string(out), nil
}
