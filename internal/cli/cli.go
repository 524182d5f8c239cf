// Package cli holds what the tollgate and tg command trees share: the version
// command and the handling of unknown subcommands.
package cli

import (
	"encoding/json"
	"fmt"
	"strings"

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

// RejectUnknown makes every command group in root's tree (a command with
// subcommands and nothing to run of its own) fail on an unknown subcommand,
// with cobra's suggestions, instead of printing its help and exiting 0.
// Call it once the tree is complete.
func RejectUnknown(root *cobra.Command) {
	// cobra adds its completion group only at Execute; add it now so the
	// walk reaches it.
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2 // cobra's own default, set only on its root path
		}
		if c.HasSubCommands() && !c.Runnable() {
			c.Args = unknownSubcommand
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
	}
	return fmt.Errorf("%s\nRun '%s --help' for usage", msg, cmd.CommandPath())
}
