package natsserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Part is one identity on the event plane. Each part may do only its own
// job, enforced by the NATS server's own subject permissions.
type Part string

const (
	// Broker appends STATE, keeps the credentials bucket and administers
	// the streams; it may never delete or purge AUDIT or STATE.
	Broker Part = "broker"
	// Agent publishes audit events and reads what its projection needs.
	Agent Part = "agent"
	// Exporter reads AUDIT and STATE through its own durable consumers
	// and writes DEADLETTER.
	Exporter Part = "exporter"
	// Auditor only reads AUDIT and STATE (`tollgate audit tail`), and
	// what the broker and exporters derive from them.
	Auditor Part = "auditor"
	// Proxy is a proxy without the broker beside it: it keeps its own
	// and its tunnels' leases in PRESENCE and records the connections
	// it refuses. It reads no STATE and no audit event.
	Proxy Part = "proxy"
)

// Parts lists every identity.
var Parts = []Part{Broker, Agent, Exporter, Auditor, Proxy}

// ParsePart reads a part's name.
func ParsePart(s string) (Part, error) {
	p := Part(s)
	if slices.Contains(Parts, p) {
		return p, nil
	}
	names := make([]string, len(Parts))
	for i, p := range Parts {
		names[i] = string(p)
	}
	return "", fmt.Errorf("%q is not an event-plane identity (want one of %s)", s, strings.Join(names, ", "))
}

// InboxPrefix is the part's reply-subject prefix. Each part may subscribe
// only below its own, so no part can read the replies (acks, consumer
// deliveries) meant for another.
func (p Part) InboxPrefix() string { return "_INBOX_" + string(p) }

// Streams and buckets named in the permissions; the events and state
// packages own their definitions, these must match them.
const (
	streamAudit      = "AUDIT"
	streamState      = "STATE"
	streamLarge      = "OBJ_AUDIT_LARGE"
	streamBeats      = "KV_DB_HEARTBEATS"
	streamSnapshots  = "OBJ_STATE_SNAPSHOTS"
	streamDeadLetter = "DEADLETTER"
	streamExporters  = "KV_EXPORTERS"
	// streamSessions is the broker's session index (sessions.IndexBucket).
	streamSessions = "KV_SESSIONS"
	// streamPresence holds the proxies and agent routes
	// (presence.Bucket): agents read it to find every proxy.
	streamPresence = "KV_PRESENCE"
)

// protectedStreams may never lose a message through the API: only their
// own retention limits remove events.
var protectedStreams = []string{streamAudit, streamState}

// readStream allows what reading one stream takes: its info, ephemeral and
// ordered consumers, direct and API gets, pulling and flow control.
func readStream(name string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + name,
		"$JS.API.CONSUMER.CREATE." + name,
		"$JS.API.CONSUMER.CREATE." + name + ".>",
		"$JS.API.CONSUMER.INFO." + name + ".*",
		"$JS.API.CONSUMER.DELETE." + name + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + name + ".*",
		"$JS.API.STREAM.MSG.GET." + name,
		"$JS.API.DIRECT.GET." + name,
		"$JS.API.DIRECT.GET." + name + ".>",
	}
}

// durableOn adds what a durable, acknowledged consumer of a stream takes.
func durableOn(name string) []string {
	return append(readStream(name),
		"$JS.API.CONSUMER.DURABLE.CREATE."+name+".*",
		"$JS.API.CONSUMER.NAMES."+name,
		"$JS.API.CONSUMER.LIST."+name,
		"$JS.ACK."+name+".>",
	)
}

// Permissions are what a part may publish and subscribe to.
func Permissions(p Part) *server.Permissions {
	inbox := p.InboxPrefix() + ".>"
	common := []string{"$JS.API.INFO", "$JS.FC.>"}
	var pub, sub []string
	var denyPub []string
	switch p {
	case Broker:
		pub = []string{">"}
		sub = []string{">"}
		for _, s := range protectedStreams {
			denyPub = append(denyPub,
				"$JS.API.STREAM.DELETE."+s,
				"$JS.API.STREAM.PURGE."+s,
				"$JS.API.STREAM.MSG.DELETE."+s)
		}
	case Agent:
		pub = append(pub, common...)
		pub = append(pub, "audit.>", "$O.AUDIT_LARGE.>", "$KV.DB_HEARTBEATS.>")
		for _, s := range []string{streamState, streamBeats, streamSnapshots, streamLarge, streamPresence} {
			pub = append(pub, readStream(s)...)
		}
		pub = append(pub, "$JS.API.STREAM.INFO."+streamAudit)
		sub = []string{inbox, "$JS.EVENT.ADVISORY.STREAM.*.AUDIT", "$JS.EVENT.ADVISORY.STREAM.*.STATE"}
	case Exporter:
		pub = append(pub, common...)
		// exporter.dead_letter and the other events of the exporter
		// itself, outside any session.
		pub = append(pub, "audit.*._.exporter.>", "deadletter.>", "$O.AUDIT_LARGE.>", "$KV.EXPORTERS.>")
		pub = append(pub, durableOn(streamAudit)...)
		pub = append(pub, durableOn(streamState)...)
		pub = append(pub, readStream(streamLarge)...)
		pub = append(pub, durableOn(streamDeadLetter)...)
		pub = append(pub, readStream(streamExporters)...)
		// The dead-letter stream and the exporters' counters are theirs.
		pub = append(pub, "$JS.API.STREAM.CREATE."+streamDeadLetter, "$JS.API.STREAM.UPDATE."+streamDeadLetter,
			"$JS.API.STREAM.CREATE."+streamExporters, "$JS.API.STREAM.UPDATE."+streamExporters)
		sub = []string{inbox}
	case Proxy:
		pub = append(pub, common...)
		// Its refusals (db.session.rejected), framed by the publisher
		// under audit.<cluster>.frame.<src>.
		pub = append(pub, "audit.>", "$KV."+strings.TrimPrefix(streamPresence, "KV_")+".>")
		pub = append(pub, readStream(streamPresence)...)
		// The publisher checks AUDIT's configuration before it stores, and
		// `tollgate start` waits for the broker to have made the streams.
		pub = append(pub, "$JS.API.STREAM.INFO."+streamAudit, "$JS.API.STREAM.INFO."+streamState)
		sub = []string{inbox, "$JS.EVENT.ADVISORY.STREAM.*.AUDIT"}
	case Auditor:
		pub = append(pub, common...)
		for _, s := range []string{streamAudit, streamState, streamLarge, streamDeadLetter, streamExporters, streamSessions, streamPresence} {
			pub = append(pub, readStream(s)...)
		}
		pub = append(pub, "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.LIST.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST")
		sub = []string{inbox}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: denyPub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// Credentials are the nkey seeds of every part, kept one file a part in a
// directory only its owner reads.
type Credentials struct {
	Dir  string
	keys map[Part]nkeys.KeyPair
}

// credentialsFile is the seed file of part p in dir.
func credentialsFile(dir string, p Part) string { return filepath.Join(dir, string(p)+".nk") }

// LoadOrCreateCredentials reads the seeds in dir, creating the directory
// (0700) and any missing seed (0600) first: a data dir written before the
// event plane had identities gets them on its first start.
func LoadOrCreateCredentials(dir string) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsserver: credentials dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsserver: credentials dir: %w", err)
	}
	c := &Credentials{Dir: dir, keys: map[Part]nkeys.KeyPair{}}
	for _, p := range Parts {
		kp, err := loadSeed(credentialsFile(dir, p))
		if errors.Is(err, os.ErrNotExist) {
			kp, err = createSeed(credentialsFile(dir, p))
		}
		if err != nil {
			return nil, fmt.Errorf("natsserver: %s credentials: %w", p, err)
		}
		c.keys[p] = kp
	}
	return c, nil
}

// LoadCredentials reads the seeds in dir that exist; a part whose seed is
// missing has none (a machine given only the agent's seed, say).
func LoadCredentials(dir string) (*Credentials, error) {
	c := &Credentials{Dir: dir, keys: map[Part]nkeys.KeyPair{}}
	for _, p := range Parts {
		kp, err := loadSeed(credentialsFile(dir, p))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("natsserver: %s credentials: %w", p, err)
		}
		c.keys[p] = kp
	}
	if len(c.keys) == 0 {
		return nil, fmt.Errorf("natsserver: no credentials in %s (want some of broker.nk, agent.nk, exporter.nk, auditor.nk)", dir)
	}
	return c, nil
}

func loadSeed(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("%s: not an nkey seed: %w", path, err)
	}
	if pk, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pk) {
		return nil, fmt.Errorf("%s: not a user nkey seed", path)
	}
	return kp, nil
}

func createSeed(path string) (nkeys.KeyPair, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return kp, f.Close()
}

// Has reports whether the credentials hold part p's seed.
func (c *Credentials) Has(p Part) bool { return c != nil && c.keys[p] != nil }

// SeedFile is the path of part p's seed.
func (c *Credentials) SeedFile(p Part) string { return credentialsFile(c.Dir, p) }

// PublicKey is part p's user nkey.
func (c *Credentials) PublicKey(p Part) string {
	kp := c.keys[p]
	if kp == nil {
		return ""
	}
	pk, _ := kp.PublicKey()
	return pk
}

// Options are the connection options of part p: its nkey, its inbox
// prefix and its name.
func (c *Credentials) Options(p Part) ([]nats.Option, error) {
	kp := c.keys[p]
	if kp == nil {
		return nil, fmt.Errorf("natsserver: no %s credentials in %s", p, c.Dir)
	}
	pk, _ := kp.PublicKey()
	return []nats.Option{
		nats.Nkey(pk, kp.Sign),
		nats.CustomInboxPrefix(p.InboxPrefix()),
		nats.Name("tollgate-" + string(p)),
	}, nil
}

// users are the server's nkey users, one per part, with its permissions.
func (c *Credentials) users() []*server.NkeyUser {
	var us []*server.NkeyUser
	for _, p := range Parts {
		if pk := c.PublicKey(p); pk != "" {
			us = append(us, &server.NkeyUser{Nkey: pk, Permissions: Permissions(p)})
		}
	}
	return us
}

// ServerConfig is the authorization block of a nats-server configuration
// file that gives every part its permissions: what the operator of an
// external cluster adds to each server's configuration.
func (c *Credentials) ServerConfig() string {
	var b strings.Builder
	b.WriteString("# Tollgate's event-plane identities: one nkey user per part, each\n# allowed only its own job. Anonymous connections are refused.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, p := range Parts {
		pk := c.PublicKey(p)
		if pk == "" {
			continue
		}
		perm := Permissions(p)
		fmt.Fprintf(&b, "    # %s\n    {\n      nkey: %s\n      permissions: {\n", p, pk)
		fmt.Fprintf(&b, "        publish: { allow: %s", quoteList(perm.Publish.Allow))
		if len(perm.Publish.Deny) > 0 {
			fmt.Fprintf(&b, ", deny: %s", quoteList(perm.Publish.Deny))
		}
		b.WriteString(" }\n")
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoteList(perm.Subscribe.Allow))
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
