// Command tg is the user's client: log in, list and connect to databases,
// run a local tunnel, request access. Each subcommand lives in a file of its
// own and adds itself to the root in an init function.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/tollgate-db/tollgate/internal/cli"
)

var root = &cobra.Command{
	Use:           "tg",
	Short:         "Reach databases through Tollgate",
	SilenceUsage:  true,
	SilenceErrors: true,
}

var flagIdentity string

func init() {
	cli.AddVersion(root)
	root.PersistentFlags().StringVarP(&flagIdentity, "identity", "i", "", "identity file (instead of the login under ~/.tg)")
}

func main() {
	cli.RejectUnknown(root)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tg:", err)
		os.Exit(1)
	}
}
