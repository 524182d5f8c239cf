package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

func init() {
	root.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the current login (or the identity file of -i): user, roles, traits, expiry, proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, path, err := currentIdentity()
			if err != nil {
				return err
			}
			id := f.Identity
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 1, ' ', 0)
			fmt.Fprintf(w, "user:\t%s\n", id.User)
			fmt.Fprintf(w, "roles:\t%s\n", strings.Join(id.Roles, ", "))
			fmt.Fprintf(w, "traits:\t%s\n", traitsText(id.Traits))
			left := time.Until(f.Cert.Leaf.NotAfter)
			exp := fmt.Sprintf("%s (in %s)", f.Cert.Leaf.NotAfter.Local().Format(time.RFC3339), left.Round(time.Second))
			if left <= 0 {
				exp = fmt.Sprintf("%s (EXPIRED)", f.Cert.Leaf.NotAfter.Local().Format(time.RFC3339))
			}
			fmt.Fprintf(w, "expires:\t%s\n", exp)
			fmt.Fprintf(w, "proxy:\t%s\n", f.ProxyAddr)
			for _, c := range f.CACerts {
				fmt.Fprintf(w, "CA:\t%s %s\n", c.Subject.CommonName, api.Fingerprint(c))
			}
			fmt.Fprintf(w, "identity:\t%s\n", path)
			if err := w.Flush(); err != nil {
				return err
			}
			return checkExpiry(f)
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "logout",
		Short: "Forget the current login (the key and certificate under ~/.tg)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if flagIdentity != "" {
				return errors.New("tg logout removes the login under ~/.tg; an identity file given with -i is yours to delete")
			}
			f, path, err := currentIdentity()
			if errors.Is(err, errNotLoggedIn) {
				fmt.Fprintln(cmd.OutOrStdout(), "not logged in")
				return nil
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if f != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "logged out %s from %s\n", f.Identity.User, f.ProxyAddr)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", path)
			}
			return nil
		},
	})
}

func traitsText(t map[string][]string) string {
	if len(t) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strings.Join(t[k], ",")
	}
	return strings.Join(parts, "; ")
}
