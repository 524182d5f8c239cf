package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
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
			dbs, why, err := c.MyDatabasesWhy(ctx)
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
			if len(dbs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), emptyDatabasesText(why, f.Identity.Roles))
				return nil
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tPROTOCOL\tLABELS\tURI\tSTATUS")
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
				status := "online"
				if !d.Online {
					status = "offline"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Protocol, labels, d.URI, status)
			}
			return w.Flush()
		},
	}
	ls.Flags().StringVar(&format, "format", "text", "text or json")
	dbCmd.AddCommand(ls)
	root.AddCommand(dbCmd)
}

// emptyDatabasesText says why `tg db ls` lists nothing, from the broker's
// reason, and what to do about it.
func emptyDatabasesText(why string, roles []string) string {
	switch why {
	case api.EmptyNoneRegistered:
		return "No databases are registered yet: an agent registers its databases when it starts (tollgate start with the agent role)."
	case api.EmptyNoneAllowed:
		return fmt.Sprintf("Databases are registered, but none that your roles (%s) allow; ask for a role with: tg request create --roles=ROLE", strings.Join(roles, ", "))
	case api.EmptyNoneLive:
		return "The databases your roles allow are offline: their agents have stopped sending heartbeats."
	}
	return "No databases your roles allow are reachable."
}
