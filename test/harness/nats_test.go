package harness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func jsConnect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestNATSSingleNode(t *testing.T) {
	n := NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := jsConnect(t, n.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "s.x", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	// The store survives a restart on the same port.
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	js = jsConnect(t, n.URL())
	st, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if msgs := st.CachedInfo().State.Msgs; msgs != 3 {
		t.Fatalf("after restart the stream holds %d messages, want 3", msgs)
	}

	n.Stop()
	if n.Running() || !portClosed(n.Port()) {
		t.Fatalf("after Stop: running %v, port %d closed %v", n.Running(), n.Port(), portClosed(n.Port()))
	}
}

func TestNATSClusterSurvivesANode(t *testing.T) {
	c := NATSCluster(t, 3)
	if c.Leader() == nil {
		t.Fatal("cluster ready without a meta leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	js := jsConnect(t, c.URL())
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if r := len(st.CachedInfo().Cluster.Replicas); r != 2 {
		t.Fatalf("stream has %d followers, want 2", r)
	}
	// A stream just created may not answer until its replicas have
	// elected a leader (seconds on a loaded machine): retried, deduplicated.
	if err := publishUntilAcked(js, "r3.a", "before", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// Stop the node that leads the stream: the others elect a new leader
	// and keep accepting.
	leader := st.CachedInfo().Cluster.Leader
	stopped := -1
	for i, n := range c.Nodes {
		if n.Name == leader {
			stopped = i
		}
	}
	if stopped < 0 {
		t.Fatalf("stream leader %q is not a node of the cluster", leader)
	}
	c.StopNode(stopped)
	if c.Nodes[stopped].Running() || !portClosed(c.Nodes[stopped].Port()) {
		t.Fatalf("node %d still serving after StopNode", stopped)
	}
	if err := publishUntilAcked(js, "r3.a", "during", 30*time.Second); err != nil {
		t.Fatalf("publish with one of three nodes down: %v", err)
	}

	if err := c.RestartNode(stopped); err != nil {
		t.Fatal(err)
	}
	if err := publishUntilAcked(js, "r3.a", "after", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("stream holds %d messages, want 3", info.State.Msgs)
	}
}

// publishUntilAcked publishes with a message id until the stream
// acknowledges it. A publish that was in flight to the node being stopped
// never gets an answer, so each try has its own short timeout; the id lets
// the stream drop a retry of a message it did store.
func publishUntilAcked(js jetstream.JetStream, subject, data string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.Publish(ctx, subject, []byte(data), jetstream.WithMsgID(data))
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
