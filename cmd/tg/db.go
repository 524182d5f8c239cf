package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// dbCmd is `tg db`; the database commands (ls here; login, connect, logout
// elsewhere) add themselves to it.
var dbCmd = &cobra.Command{Use: "db", Short: "Databases you can reach"}

func init() {
	var format string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the databases your roles can reach, with their labels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, _, err := currentIdentity()
			if err != nil {
				return err
			}
			if err := checkExpiry(f); err != nil {
				return err
			}
			c, err := apiClient(f)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := withTimeout(cmd.Context())
			defer cancel()
			dbs, err := c.MyDatabases(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch format {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(dbs)
			case "text", "":
			default:
				return fmt.Errorf("--format: want text or json, got %q", format)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tPROTOCOL\tLABELS\tURI")
			for _, d := range dbs {
				kv := make([]string, 0, len(d.Labels))
				for k, v := range d.Labels {
					kv = append(kv, k+"="+v)
				}
				sort.Strings(kv)
				labels := strings.Join(kv, ",")
				if labels == "" {
					labels = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", d.Name, d.Protocol, labels, d.URI)
			}
			return w.Flush()
		},
	}
	ls.Flags().StringVar(&format, "format", "text", "text or json")
	dbCmd.AddCommand(ls)
	root.AddCommand(dbCmd)
}
