// Command tollgate runs Tollgate's daemon (broker, proxy, agent, exporters,
// embedded NATS) and its admin commands. Each subcommand lives in a file of
// its own and adds itself to the root in an init function.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/tollgate-db/tollgate/internal/cli"
)

// root is the `tollgate` command; --config is global so it may stand before
// or after the subcommand (DESIGN.md §4).
var root = &cobra.Command{
	Use:           "tollgate",
	Short:         "Audited, certificate-based access to databases",
	SilenceUsage:  true,
	SilenceErrors: true,
}

var (
	flagConfig  string
	flagDataDir string
)

func init() {
	cli.AddVersion(root)
	root.PersistentFlags().StringVar(&flagConfig, "config", os.Getenv("TOLLGATE_CONFIG"), "configuration file (or TOLLGATE_CONFIG)")
	root.PersistentFlags().StringVar(&flagDataDir, "data-dir", "", "data directory (overrides data_dir in the configuration)")
}

func main() {
	cli.RejectUnknown(root)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}
