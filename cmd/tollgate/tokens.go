package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

func init() {
	tokens := &cobra.Command{Use: "tokens", Short: "Join tokens for agents and proxies"}
	tokens.AddCommand(tokensAddCmd(), tokensLsCmd())
	root.AddCommand(tokens)
}

func tokensAddCmd() *cobra.Command {
	var req api.AddTokenRequest
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "add --type=db|proxy [--ttl=DUR] [--reusable]",
		Short: "Create a join token and print it (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req.TTL = api.Duration(ttl)
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, proxy string) error {
				res, err := a.AddToken(ctx, req)
				if err != nil {
					return err
				}
				use := "single use"
				if !res.Token.SingleUse {
					use = "reusable"
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "%s\n", res.Value)
				// A proxy joins as an agent does, from its own section.
				role, section := "agent", "db_service"
				if res.Token.Type == "proxy" {
					role, section = "proxy", "proxy"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "join token of type %s (%s, valid until %s, id %.12s…); in the %s's configuration:\n  broker:\n    enabled: false\n  %s:\n    broker_addr: %s\n    join_token: %s\n    broker_ca_pin: %s\n",
					res.Token.Type, use, res.Token.Expires.UTC().Format(time.RFC3339), res.Token.ID, role, section, proxy, res.Value, res.HostCAPin)
				return nil
			})
		},
	}
	c.Flags().StringVar(&req.Type, "type", "", "what the token lets join: db (an agent) or proxy (a proxy without the broker)")
	c.Flags().DurationVar(&ttl, "ttl", 0, "how long the token works (default 30m, at most 720h)")
	c.Flags().BoolVar(&req.Reusable, "reusable", false, "let the token be used by several agents until it expires (default: single use)")
	return c
}

func tokensLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List join tokens (by id: the SHA-256 of the value)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				ts, err := a.Tokens(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, ts, []string{"ID", "TYPE", "EXPIRES", "SINGLE_USE", "USES", "LAST_USED_BY"}, func(t api.Token) []string {
					return []string{t.ID[:16] + "…", t.Type, t.Expires.UTC().Format(time.RFC3339), strconv.FormatBool(t.SingleUse), strconv.Itoa(t.Uses), t.LastUsedBy}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}
