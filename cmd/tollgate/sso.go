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
	"github.com/tollgate-db/tollgate/broker/sso"
)

func init() {
	c := &cobra.Command{Use: "sso", Short: "Add, list and remove single sign-on connectors"}
	c.AddCommand(ssoAddCmd(), ssoLsCmd(), ssoRmCmd())
	root.AddCommand(c)
}

func ssoAddCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "add -f CONNECTOR.yaml",
		Short: "Add or replace the connectors of a YAML file (documents separated by ---; - reads stdin)",
		Long: `Add or replace single sign-on connectors. A connector names an OpenID
Connect provider, the client registered with it, and which claims grant which
roles and traits:

  kind: connector
  version: v1
  metadata:
    name: corp
  spec:
    type: oidc
    display: Corp SSO
    issuer_url: https://idp.example.com
    client_id: tollgate
    client_secret: ...
    scopes: [email, profile, groups]
    username_claim: email            # default
    claims_to_roles:
      - {claim: groups, value: dba, roles: [access], db_users: [postgres]}
      - {claim: email, value: "*@example.com", roles: [requester]}

Register https://<proxy address>/sso/oidc/<name>/callback with the provider.
The client secret is kept in the broker's credentials store, never in the
state stream or its events.

A SAML 2.0 identity provider is named by its metadata, and attributes grant
roles and traits as claims do:

  kind: connector
  metadata:
    name: ent
  spec:
    type: saml
    entity_descriptor_url: https://idp.example.com/saml/metadata
    # or entity_descriptor: | with the metadata XML
    username_attribute: mail         # default: the subject's NameID
    attributes_to_roles:
      - {name: groups, value: dba, roles: [access], db_users: [postgres]}

Register Tollgate with the provider from its metadata at
https://<proxy address>/sso/saml/<name>/metadata (the entity id; the ACS is
/sso/saml/<name>/acs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f CONNECTOR.yaml is required")
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
				res, err := a.UpsertConnectors(ctx, string(b))
				for _, r := range res {
					fmt.Fprintf(cmd.OutOrStdout(), "connector %s %s\n", r.Name, r.Result)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "YAML file of connectors (kind: connector)")
	return c
}

func ssoLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List single sign-on connectors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				cs, err := a.Connectors(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, cs, []string{"NAME", "TYPE", "ISSUER", "CLIENT", "SECRET", "MAPPINGS"}, func(c api.Connector) []string {
					secret := "no"
					if c.SecretSet {
						secret = "yes"
					}
					var ms []string
					for _, m := range c.ClaimsToRoles {
						ms = append(ms, fmt.Sprintf("%s=%s→%s", m.Claim, m.Value, strings.Join(m.Roles, ",")))
					}
					issuer, client := c.IssuerURL, c.ClientID
					if c.Type == sso.TypeSAML {
						// A SAML connector has its provider's metadata
						// and no client.
						issuer, client, secret = c.EntityDescriptorURL, "-", "-"
						if issuer == "" {
							issuer = "(inline metadata)"
						}
					}
					return []string{c.Name, c.Type, issuer, client, secret, strings.Join(ms, "; ")}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

func ssoRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a single sign-on connector",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				if err := a.RemoveConnector(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "connector %s removed\n", args[0])
				return nil
			})
		},
	}
}
