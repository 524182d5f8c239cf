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
		Short: "List every registered database, live or not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				ds, err := a.Databases(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, ds, []string{"NAME", "PROTOCOL", "LABELS", "URI", "STATUS"}, func(d api.Database) []string {
					st := "live"
					if !d.Live {
						st = "expired"
					}
					return []string{d.Name, d.Protocol, labelText(d.Labels), d.URI, st}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
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
