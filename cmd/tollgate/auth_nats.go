package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/events/natsserver"
)

// authNATSCmd is `tollgate auth nats`: the event-plane identities for an
// external NATS cluster. The embedded server makes the same ones in the
// data dir on its first start.
func authNATSCmd() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "nats [--dir=DIR]",
		Short: "Make (or read) each part's NATS identity and print the nats-server authorization block that gives each only its own job",
		Long: `Each part of Tollgate connects to NATS with its own nkey identity: broker,
agent, exporter and auditor. This command makes the seeds that are missing in
DIR (0600 files: broker.nk, agent.nk, exporter.nk, auditor.nk; default
<data_dir>/nats-auth) and prints the authorization block to add to every
server of an external NATS cluster. Give each machine only the seeds of the
roles it runs, and point nats.credentials_dir at them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				cfg, err := loadConfig()
				if err != nil {
					return err
				}
				if flagDataDir != "" {
					cfg.DataDir = flagDataDir
				}
				dir = natsserver.CredentialsDir(cfg)
			}
			creds, err := natsserver.LoadOrCreateCredentials(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "seeds in %s (%s … %s)\n", creds.Dir,
				filepath.Base(creds.SeedFile(natsserver.Broker)), filepath.Base(creds.SeedFile(natsserver.Auditor)))
			_, err = fmt.Fprint(cmd.OutOrStdout(), creds.ServerConfig())
			return err
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "where the seeds are kept (default <data_dir>/nats-auth)")
	return c
}
