package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/protocol"
)

func init() {
	var cf dbFlags
	connect := &cobra.Command{
		Use:   "connect NAME [--db-user=U] [--db-name=N] [-- CLIENT ARGS...]",
		Short: "Open the database's own client (psql, mariadb, redis-cli) through a tunnel on a free local port",
		Long: `Start a tunnel (as tg proxy db --tunnel does) on a free port of 127.0.0.1 and run
the database's client against it: psql for PostgreSQL and CockroachDB, mariadb
(or mysql) for MySQL, redis-cli for Redis. Arguments after -- go to the client, e.g.
  tg db connect pg1 --db-user=app -- -c 'select 1'
tg exits with the client's exit status. Ctrl-C reaches the client (psql
cancels the running statement through the tunnel); the tunnel stays up until
the client exits.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConnect(cmd, args[0], cf, args[1:])
		},
	}
	cf.add(connect, false)

	var lf dbFlags
	login := &cobra.Command{
		Use:   "login NAME [--db-user=U] [--db-name=N]",
		Short: "Write a connection service entry so any libpq client reaches the database directly over TLS",
		Long: `Write the section [tollgate-NAME] into the PostgreSQL connection service file
($PGSERVICEFILE, else ~/.pg_service.conf): the agent's address, the database
name as the TLS host name the agent routes on, verify-full against the
cluster's host CA, and your certificate and key. libpq clients then connect
with service=tollgate-NAME (psql "service=tollgate-NAME"), or with
PGSERVICE=tollgate-NAME in their environment. The entry points at your
identity file (~/.tg/identity, or the -i FILE given), so logging in again
keeps it working.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDBLogin(cmd, args[0], lf)
		},
	}
	lf.add(login, false)

	logout := &cobra.Command{
		Use:   "logout [NAME]",
		Short: "Remove the connection service entry of NAME (of every database without NAME)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return runDBLogout(cmd, name)
		},
	}
	dbCmd.AddCommand(connect, login, logout)
}

// clientFor returns the client program for a protocol, the first found of
// its candidates.
func clientFor(proto string) (string, error) {
	names := protocol.Get(proto).Clients
	if len(names) == 0 {
		return "", fmt.Errorf("tg db connect does not support %s databases yet: use tg proxy db --tunnel and your own client", proto)
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s client found in PATH (looked for %s)", proto, strings.Join(names, ", "))
}

func runConnect(cmd *cobra.Command, name string, f dbFlags, extra []string) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	t, db, err := openTunnel(ctx, cmd, name, f, "127.0.0.1:0")
	if err != nil {
		return err
	}
	prog, err := clientFor(db.Protocol)
	if err != nil {
		t.ln.Close()
		return err
	}
	host, port, _ := net.SplitHostPort(t.Addr())
	var args []string
	switch protocol.EngineOf(db.Protocol) {
	case protocol.MySQL:
		args = []string{"--host=" + host, "--port=" + port, "--skip-ssl"}
		if t.user != "" {
			args = append(args, "--user="+t.user)
		}
		if t.name != "" {
			args = append(args, "--database="+t.name)
		}
	case protocol.Redis:
		args = redisCLIArgs(host, port, t.user, t.name)
	default:
		conn := fmt.Sprintf("host=%s port=%s sslmode=disable gssencmode=disable application_name=tg", host, port)
		if t.user != "" {
			conn += " user=" + t.user
		}
		if t.name != "" {
			conn += " dbname=" + t.name
		}
		args = []string{conn}
	}
	args = append(args, extra...)

	served := make(chan error, 1)
	go func() { served <- t.Serve(ctx) }()

	// Ctrl-C goes to the whole foreground process group: the client acts
	// on it (psql sends a cancel request through the tunnel), and tg
	// keeps the tunnel up until the client exits.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	c := exec.Command(prog, args...)
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	c.Env = os.Environ()
	runErr := c.Run()
	cancel()
	if err := <-served; err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "tg: tunnel:", err)
	}
	var ee *exec.ExitError
	if errors.As(runErr, &ee) {
		// The client said why; exit with its status.
		os.Exit(ee.ExitCode())
	}
	if runErr != nil {
		return fmt.Errorf("%s: %w", filepath.Base(prog), runErr)
	}
	return nil
}

// serviceSection is the name of a database's section in the service file.
func serviceSection(db string) string { return "tollgate-" + db }

// serviceFile is libpq's per-user connection service file.
func serviceFile() (string, error) {
	if p := os.Getenv("PGSERVICEFILE"); p != "" {
		return p, nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory for ~/.pg_service.conf (set HOME or PGSERVICEFILE): %w", err)
	}
	return filepath.Join(h, ".pg_service.conf"), nil
}

func runDBLogin(cmd *cobra.Command, name string, f dbFlags) error {
	id, idPath, err := currentIdentity()
	if err != nil {
		return err
	}
	if err := checkExpiry(id); err != nil {
		return err
	}
	ctx, cancel := withTimeout(cmd.Context())
	defer cancel()
	db, err := findDatabase(ctx, id, name)
	if err != nil {
		return err
	}
	if protocol.EngineOf(db.Protocol) != protocol.Postgres {
		return fmt.Errorf("tg db login writes PostgreSQL connection services; %s is a %s database: use tg proxy db %s --tunnel", name, db.Protocol, name)
	}
	host, port, err := net.SplitHostPort(db.AgentAddr)
	if err != nil {
		return fmt.Errorf("agent address %q: %w", db.AgentAddr, err)
	}
	// libpq dials hostaddr and uses host for SNI and the certificate
	// check: host is the database name the agent routes on and names in
	// its certificate.
	addr := host
	if net.ParseIP(host) == nil {
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil || len(ips) == 0 {
			return fmt.Errorf("agent host %s: %v", host, err)
		}
		addr = ips[0]
	}
	if idPath, err = filepath.Abs(idPath); err != nil {
		return err
	}
	dbUser := f.dbUser
	if dbUser == "" {
		dbUser = defaultTrait(id.Identity, identity.TraitDBUsers)
	}
	dbName := f.dbName
	if dbName == "" {
		dbName = defaultTrait(id.Identity, identity.TraitDBNames)
	}
	sf, err := sessionFile(ctx, cmd, id, db, dbUser, f)
	if err != nil {
		return err
	}
	if sf != id {
		// A certificate for this one session: kept beside the login's,
		// and the entry points at it.
		dir, err := ensureHome()
		if err != nil {
			return err
		}
		idPath = filepath.Join(dir, "session-"+db.Name)
		if err := identity.WriteFile(idPath, sf); err != nil {
			return err
		}
	}
	params := [][2]string{
		{"host", protocol.ServerName(db.Name)},
		{"hostaddr", addr},
		{"port", port},
		{"sslmode", "verify-full"},
		// The identity file holds key, certificate and CAs as PEM blocks;
		// libpq picks the block each setting wants.
		{"sslrootcert", idPath},
		{"sslcert", idPath},
		{"sslkey", idPath},
		{"gssencmode", "disable"},
	}
	if dbUser != "" {
		params = append(params, [2]string{"user", dbUser})
	}
	if dbName != "" {
		params = append(params, [2]string{"dbname", dbName})
	}
	path, err := serviceFile()
	if err != nil {
		return err
	}
	section := serviceSection(db.Name)
	var body strings.Builder
	fmt.Fprintf(&body, "[%s]\n", section)
	fmt.Fprintf(&body, "# written by tg db login %s; tg db logout %s removes it\n", db.Name, db.Name)
	for _, p := range params {
		fmt.Fprintf(&body, "%s=%s\n", p[0], p[1])
	}
	if err := editServiceFile(path, func(sections map[string]bool) map[string]string {
		return map[string]string{section: body.String()}
	}); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Wrote [%s] to %s.\n", section, path)
	if sf != id {
		fmt.Fprintf(out, "Its certificate was issued after a second factor for one session as %s, and starts one until %s: connect now.\n",
			dbUser, sf.Cert.Leaf.NotAfter.Local().Format("15:04:05"))
	}
	fmt.Fprintf(out, "Connect with:\n  psql \"service=%s\"\n", section)
	fmt.Fprintf(out, "Other libpq tools read the same entry from the environment:\n")
	if os.Getenv("PGSERVICEFILE") != "" {
		fmt.Fprintf(out, "  export PGSERVICEFILE=%s\n", path)
	}
	fmt.Fprintf(out, "  export PGSERVICE=%s\n", section)
	fmt.Fprintf(out, "or, spelled out:\n")
	for _, p := range params {
		fmt.Fprintf(out, "  export %s=%s\n", pgEnvName(p[0]), shellQuote(p[1]))
	}
	return nil
}

// pgEnvName is the libpq environment variable of a connection parameter.
func pgEnvName(param string) string {
	switch param {
	case "dbname":
		return "PGDATABASE"
	case "sslrootcert":
		return "PGSSLROOTCERT"
	case "sslcert":
		return "PGSSLCERT"
	case "sslkey":
		return "PGSSLKEY"
	case "sslmode":
		return "PGSSLMODE"
	case "gssencmode":
		return "PGGSSENCMODE"
	}
	return "PG" + strings.ToUpper(param)
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func runDBLogout(cmd *cobra.Command, name string) error {
	path, err := serviceFile()
	if err != nil {
		return err
	}
	var removed []string
	err = editServiceFile(path, func(sections map[string]bool) map[string]string {
		out := map[string]string{}
		for s := range sections {
			if (name == "" && strings.HasPrefix(s, "tollgate-")) || s == serviceSection(name) {
				out[s] = ""
				removed = append(removed, s)
			}
		}
		return out
	})
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		if name == "" {
			fmt.Fprintf(cmd.OutOrStdout(), "No tollgate entries in %s.\n", path)
			return nil
		}
		return fmt.Errorf("%s has no [%s] entry (tg db login %s writes it)", path, serviceSection(name), name)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Removed %s from %s.\n", strings.Join(removed, ", "), path)
	return nil
}

// editServiceFile rewrites the service file at path: change gets the
// names of its sections and returns sections to replace (a new text, or ""
// to remove); a replaced section not in the file is appended. Everything
// else in the file is kept as it was. The file is written atomically with
// mode 0600 (it names key files).
func editServiceFile(path string, change func(sections map[string]bool) map[string]string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	type block struct {
		name string // "" for lines before the first section
		text strings.Builder
	}
	var blocks []*block
	cur := &block{}
	blocks = append(blocks, cur)
	sections := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(old))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
			cur = &block{name: strings.TrimSpace(t[1 : len(t)-1])}
			blocks = append(blocks, cur)
			sections[cur.name] = true
		}
		cur.text.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	repl := change(sections)
	var out bytes.Buffer
	done := map[string]bool{}
	for _, b := range blocks {
		text, ok := repl[b.name]
		if !ok || b.name == "" {
			out.WriteString(b.text.String())
			continue
		}
		if !done[b.name] && text != "" {
			ensureBlankLine(&out)
			out.WriteString(text)
			// Keep the blank lines that separated the old section from
			// the next.
			old := b.text.String()
			out.WriteString(old[len(strings.TrimRight(old, "\n"))+1:])
		}
		done[b.name] = true
	}
	for name, text := range repl {
		if !done[name] && text != "" {
			ensureBlankLine(&out)
			out.WriteString(text)
		}
	}
	if bytes.Equal(out.Bytes(), old) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writePrivate(path, out.Bytes())
}

func ensureBlankLine(b *bytes.Buffer) {
	if b.Len() == 0 {
		return
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\n\n")) {
		b.WriteByte('\n')
	}
}

// redisCLIArgs are redis-cli's arguments for the tunnel at host:port. The
// agent signs in to Redis itself as the db user the client's first AUTH
// names, so the password redis-cli sends is a placeholder the agent
// neither checks nor forwards; without a db user the agent signs in as
// Redis's default user. A db name is the logical database number.
func redisCLIArgs(host, port, dbUser, dbName string) []string {
	args := []string{"-h", host, "-p", port}
	if dbUser != "" {
		args = append(args, "--user", dbUser, "-a", "tollgate", "--no-auth-warning")
	}
	if dbName != "" {
		args = append(args, "-n", dbName)
	}
	return args
}
