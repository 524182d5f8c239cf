package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

func init() {
	roles := &cobra.Command{Use: "roles", Short: "Create and list roles"}
	roles.AddCommand(rolesCreateCmd(), rolesLsCmd())
	root.AddCommand(roles)
}

func rolesCreateCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "create -f FILE.yaml",
		Short: "Create or replace the roles of a YAML file (documents separated by ---; - reads stdin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f FILE.yaml is required")
			}
			var b []byte
			var err error
			if file == "-" {
				b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), api.MaxBody))
			} else {
				b, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				res, err := a.UpsertRoles(ctx, string(b))
				for _, r := range res {
					fmt.Fprintf(cmd.OutOrStdout(), "role %s %s\n", r.Name, r.Result)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "YAML file of roles (kind: role)")
	return c
}

func rolesLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List built-in and stored roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				rs, err := a.Roles(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, rs, []string{"NAME", "BUILTIN", "ALLOW", "DENY", "DESCRIPTION"}, func(r api.Role) []string {
					b := "no"
					if r.Builtin {
						b = "yes"
					}
					allow, deny := condText(r.Spec.Allow.DBLabels, r.Spec.Allow.DBUsers, r.Spec.Allow.DBNames), condText(r.Spec.Deny.DBLabels, r.Spec.Deny.DBUsers, r.Spec.Deny.DBNames)
					return []string{r.Name(), b, allow, deny, r.Metadata.Description}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

// condText summarises one side of a role for the table.
func condText[L ~map[string]V, V ~[]string](labels L, users, names []string) string {
	var parts []string
	if len(labels) > 0 {
		var kv []string
		for k, vs := range labels {
			kv = append(kv, k+"="+strings.Join(vs, "|"))
		}
		sortStrings(kv)
		parts = append(parts, "labels "+strings.Join(kv, ","))
	}
	if len(users) > 0 {
		parts = append(parts, "db_users "+strings.Join(users, ","))
	}
	if len(names) > 0 {
		parts = append(parts, "db_names "+strings.Join(names, ","))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}
