// Package cli holds what the tollgate and tg command trees share: the version
// command and the handling of unknown subcommands.
package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/tollgate-db/tollgate/internal/buildinfo"
)

// AddVersion gives root a `version` subcommand and a --version flag.
func AddVersion(root *cobra.Command) {
	info := buildinfo.Get()
	root.Version = info.String()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	var format string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "json":
				b, err := json.MarshalIndent(info, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			case "text":
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", root.Name(), info)
			default:
				return fmt.Errorf("--format: want text or json, not %q", format)
			}
			return nil
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	root.AddCommand(c)
}
