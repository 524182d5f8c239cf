package main

import (
	"context"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

func init() {
	db := &cobra.Command{Use: "db", Short: "Databases registered by agents"}
	db.AddCommand(dbLsCmd())
	root.AddCommand(db)
}

func dbLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List every registered database, online or not, with the proxies that route it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				ds, err := a.Databases(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, ds, []string{"NAME", "PROTOCOL", "LABELS", "URI", "STATUS", "PROXIES"}, func(d api.Database) []string {
					proxies := "-"
					if len(d.Proxies) > 0 {
						proxies = strings.Join(d.Proxies, ",")
					}
					return []string{d.Name, d.Protocol, labelText(d.Labels), d.URI, statusText(d), proxies}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

// statusText is online or offline (see api.Database.Online).
func statusText(d api.Database) string {
	if d.Online {
		return "online"
	}
	return "offline"
}

// labelText writes labels as k=v,k=v sorted by key.
func labelText(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	kv := make([]string, 0, len(l))
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	sortStrings(kv)
	return strings.Join(kv, ",")
}

func sortStrings(s []string) { sort.Strings(s) }
