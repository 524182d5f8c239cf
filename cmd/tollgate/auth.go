package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
)

// `tollgate auth …`: the certificate authorities of the local data dir.
func init() {
	auth := &cobra.Command{
		Use:   "auth",
		Short: "Certificate authorities: export CA certificates, sign database and identity certificates, CRLs",
	}
	auth.AddCommand(authExportCmd(), authSignCmd(), authCRLCmd(), authRevokeCmd(), authNATSCmd())
	root.AddCommand(auth)
}

// loadConfig is the configuration the global flags name: --config, else
// the defaults.
func loadConfig() (*config.Config, error) {
	if flagConfig != "" {
		return config.Load(flagConfig)
	}
	return config.Default(), nil
}

// dataDir is --data-dir, else data_dir of --config, else the default.
func dataDir() (string, error) {
	if flagDataDir != "" {
		return flagDataDir, nil
	}
	c, err := loadConfig()
	if err != nil {
		return "", err
	}
	return c.DataDir, nil
}

func openCAs() (*ca.Authorities, error) {
	dir, err := dataDir()
	if err != nil {
		return nil, err
	}
	return ca.Open(dir)
}

// writeOutput writes b to path, or to stdout when path is "" or "-".
func writeOutput(cmd *cobra.Command, path string, b []byte) error {
	if path == "" || path == "-" {
		_, err := cmd.OutOrStdout().Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func authExportCmd() *cobra.Command {
	var typ, out string
	c := &cobra.Command{
		Use:   "export --type=db-client|db-client-der|db|user|host",
		Short: "Print a CA certificate (PEM; db-client-der is DER for Windows NTAuth/GPO import)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if typ == "" {
				return errors.New("--type is required: db-client, db-client-der, db, user or host")
			}
			a, err := openCAs()
			if err != nil {
				return err
			}
			b, err := a.Export(typ)
			if err != nil {
				return err
			}
			return writeOutput(cmd, out, b)
		},
	}
	c.Flags().StringVar(&typ, "type", "", "db-client, db-client-der, db, user or host")
	c.Flags().StringVar(&out, "out", "", "write to this file instead of stdout")
	return c
}

func authCRLCmd() *cobra.Command {
	var typ, out string
	c := &cobra.Command{
		Use:   "crl [--type=db_client] [--out=FILE]",
		Short: "Print a freshly signed DER certificate revocation list",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := ca.ParseType(typ)
			if err != nil {
				return err
			}
			a, err := openCAs()
			if err != nil {
				return err
			}
			der, err := a.CRL(t)
			if err != nil {
				return err
			}
			return writeOutput(cmd, out, der)
		},
	}
	c.Flags().StringVar(&typ, "type", "db_client", "CA whose CRL to sign (db_client, db, user, host)")
	c.Flags().StringVar(&out, "out", "", "write to this file instead of stdout")
	return c
}

func authRevokeCmd() *cobra.Command {
	var typ, serial string
	c := &cobra.Command{
		Use:   "revoke --type=db_client --serial=HEX",
		Short: "Add a certificate serial number to a CA's revocation list (publish the new CRL afterwards)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := ca.ParseType(typ)
			if err != nil {
				return err
			}
			s := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(serial), "0x"), ":", "")
			n, ok := new(big.Int).SetString(s, 16)
			if !ok {
				return fmt.Errorf("--serial %q is not a hexadecimal serial number", serial)
			}
			a, err := openCAs()
			if err != nil {
				return err
			}
			if err := a.Revoke(t, n); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s serial %s; publish the new CRL: tollgate auth crl --type=%s --out=FILE\n", t, n.Text(16), t)
			return nil
		},
	}
	c.Flags().StringVar(&typ, "type", "db_client", "CA that signed the certificate")
	c.Flags().StringVar(&serial, "serial", "", "serial number in hex (colons allowed, as openssl prints it)")
	return c
}

// signFlags are the flags of `auth sign`.
type signFlags struct {
	format, out, proxy, user string
	hosts, roles             []string
	dbUsers, dbNames         []string
	ttl                      time.Duration
}

func authSignCmd() *cobra.Command {
	var f signFlags
	c := &cobra.Command{
		Use:   "sign --format=db|cockroachdb|identity --out=PATH [--host=H,..] [--user=U] [--ttl=DUR]",
		Short: "Sign certificates for a database server or an identity file",
		Long: `Sign certificates and write them in the form their user needs:

  --format=db --host=H[,H] --out=PREFIX     PREFIX.crt, PREFIX.key, PREFIX.cas for
                                            PostgreSQL ssl_cert_file, ssl_key_file, ssl_ca_file
                                            (MySQL/MariaDB ssl_cert, ssl_key, ssl_ca)
  --format=cockroachdb --host=H --out=DIR   DIR/ca.crt, ca-client.crt, node.crt, node.key
  --format=identity --user=U --roles=R --out=FILE
                                            an identity file for tg -i FILE and scripts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.out == "" {
				return errors.New("--out is required")
			}
			a, err := openCAs()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch f.format {
			case "db":
				return signDB(w, a, f)
			case "cockroachdb":
				return signCockroach(w, a, f)
			case "identity":
				if f.proxy == "" {
					cfg, err := loadConfig()
					if err != nil {
						return err
					}
					f.proxy = cfg.Proxy.PublicAddr
				}
				src := identityFromFlags(f.roles, f.dbUsers, f.dbNames)
				if len(f.roles) == 0 && stateIdentity != nil {
					src = stateIdentity
				}
				return signIdentity(w, a, src, f)
			case "":
				return errors.New("--format is required: db, cockroachdb or identity")
			default:
				return fmt.Errorf("unknown --format %q (want db, cockroachdb or identity)", f.format)
			}
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.format, "format", "", "db, cockroachdb or identity")
	fl.StringVar(&f.out, "out", "", "output: file prefix (db), directory (cockroachdb) or file (identity)")
	fl.StringSliceVar(&f.hosts, "host", nil, "host names or IP addresses of the database server (db, cockroachdb)")
	fl.DurationVar(&f.ttl, "ttl", 0, "lifetime (default 2160h for db and cockroachdb, 12h for identity)")
	fl.StringVar(&f.user, "user", "", "user of the identity file (identity)")
	fl.StringSliceVar(&f.roles, "roles", nil, "roles of the identity (identity)")
	fl.StringSliceVar(&f.dbUsers, "db-users", nil, "database users the identity may log in as: trait db_users (identity)")
	fl.StringSliceVar(&f.dbNames, "db-names", nil, "database names the identity may use: trait db_names (identity)")
	fl.StringVar(&f.proxy, "proxy", "", "proxy address written into the identity file (default: proxy.public_addr of the configuration)")
	return c
}

func signDB(w io.Writer, a *ca.Authorities, f signFlags) error {
	if len(f.hosts) == 0 {
		return errors.New("--host is required for --format=db: the names and addresses clients use to reach the database")
	}
	paths, err := a.WriteDBFiles(f.out, f.hosts, f.ttl)
	if err != nil {
		return err
	}
	if certIssued != nil {
		certPEM, err := os.ReadFile(f.out + ".crt")
		if err != nil {
			return err
		}
		if err := certIssued(ca.DB, certPEM); err != nil {
			return err
		}
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	fmt.Fprintf(w, "wrote %s\n", strings.Join(paths, ", "))
	fmt.Fprintf(w, "PostgreSQL (postgresql.conf):\n  ssl = on\n  ssl_cert_file = '%s'\n  ssl_key_file = '%s'\n  ssl_ca_file = '%s'\n",
		abs(f.out+".crt"), abs(f.out+".key"), abs(f.out+".cas"))
	fmt.Fprintf(w, "and in pg_hba.conf: hostssl all all ADDRESS cert\n")
	return nil
}

func signCockroach(w io.Writer, a *ca.Authorities, f signFlags) error {
	if len(f.hosts) == 0 {
		return errors.New("--host is required for --format=cockroachdb: the node's host names and addresses")
	}
	paths, err := a.WriteCockroachFiles(f.out, f.hosts, f.ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s\nstart CockroachDB with --certs-dir=%s\n", strings.Join(paths, ", "), f.out)
	return nil
}

// identitySource supplies the identity that an identity file for user
// carries. The command line builds one from --roles, --db-users and
// --db-names; the broker's user state can supply another.
type identitySource func(user string) (identity.Identity, error)

// certIssued, when set, records a certificate signed here in the audit
// trail (cert.issue).
var certIssued func(t ca.Type, certPEM []byte) error

// stateIdentity, when set, is the identitySource of the broker's users,
// used when --roles is not given.
var stateIdentity identitySource

// identityFromFlags is the identitySource of the command-line flags.
func identityFromFlags(roles, dbUsers, dbNames []string) identitySource {
	return func(user string) (identity.Identity, error) {
		if len(roles) == 0 {
			return identity.Identity{}, errors.New("--roles is required for --format=identity: the roles the identity file grants")
		}
		id := identity.Identity{User: user, Roles: roles}
		if len(dbUsers) > 0 || len(dbNames) > 0 {
			id.Traits = map[string][]string{}
			if len(dbUsers) > 0 {
				id.Traits[identity.TraitDBUsers] = dbUsers
			}
			if len(dbNames) > 0 {
				id.Traits[identity.TraitDBNames] = dbNames
			}
		}
		return id, nil
	}
}

// signIdentity writes an identity file for f.user: a fresh key, a user
// certificate carrying the identity src gives, and the user and host CA
// certificates.
func signIdentity(w io.Writer, a *ca.Authorities, src identitySource, f signFlags) error {
	if f.user == "" {
		return errors.New("--user is required for --format=identity")
	}
	id, err := src(f.user)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert, certPEM, err := a.IssueUser(key.Public(), id, f.ttl)
	if err != nil {
		return err
	}
	if certIssued != nil {
		if err := certIssued(ca.User, certPEM); err != nil {
			return err
		}
	}
	var cas []*x509.Certificate
	for _, t := range []ca.Type{ca.User, ca.Host} {
		c, err := a.Cert(t)
		if err != nil {
			return err
		}
		cas = append(cas, c)
	}
	file, err := identity.NewFile(f.proxy, key, cert, cas)
	if err != nil {
		return err
	}
	if err := identity.WriteFile(f.out, file); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s: user %s, roles %s, valid until %s\n", f.out, id.User, strings.Join(id.Roles, ","), cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
