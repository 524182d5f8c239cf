// Package sso holds single sign-on: the connectors (which identity
// providers the broker trusts, kept in STATE without their secrets), the
// mapping of a provider's claims to roles and traits, and the browser flow
// of an OpenID Connect login, for the web UI and for `tg login --auth`.
package sso

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config/strictyaml"
	"github.com/tollgate-db/tollgate/events"
)

// Kind is the YAML kind of a connector document.
const Kind = "connector"

// TypeOIDC is the only connector type so far.
const TypeOIDC = "oidc"

// DefaultUsernameClaim names the user when a connector names no claim.
const DefaultUsernameClaim = "email"

// File is one connector as written in YAML.
type File struct {
	Kind     string `yaml:"kind"`
	Version  string `yaml:"version"`
	Metadata struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
	} `yaml:"metadata"`
	Spec struct {
		Type          string    `yaml:"type"`
		Display       string    `yaml:"display"`
		IssuerURL     string    `yaml:"issuer_url"`
		ClientID      string    `yaml:"client_id"`
		ClientSecret  string    `yaml:"client_secret"`
		RedirectURL   string    `yaml:"redirect_url"`
		Scopes        []string  `yaml:"scopes"`
		UsernameClaim string    `yaml:"username_claim"`
		ClaimsToRoles []Mapping `yaml:"claims_to_roles"`
	} `yaml:"spec"`
}

// Mapping is one entry of claims_to_roles.
type Mapping struct {
	Claim   string   `yaml:"claim"`
	Value   string   `yaml:"value"`
	Roles   []string `yaml:"roles"`
	DBUsers []string `yaml:"db_users"`
	DBNames []string `yaml:"db_names"`
}

// Parsed is a connector read from YAML: what STATE keeps and its secret.
type Parsed struct {
	Connector events.Connector
	Secret    string
}

// Parse reads connectors from YAML (documents separated by ---), strictly:
// an unknown key is an error naming it and its line, because a misspelt
// claims_to_roles would silently grant nothing (or too much).
func Parse(b []byte) ([]Parsed, error) {
	var docs []*yaml.Node
	nd := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		if err := nd.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("connectors: %w", err)
		}
		docs = append(docs, &n)
	}
	var out []Parsed
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	for i := 0; ; i++ {
		var f File
		err := dec.Decode(&f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("connectors: %w", err)
			}
			var doc *yaml.Node
			if i < len(docs) {
				doc = docs[i]
			}
			return nil, strictyaml.Reword(err, doc, &f)
		}
		if f.Kind == "" && f.Metadata.Name == "" && f.Spec.Type == "" {
			continue // an empty document, e.g. after a trailing ---
		}
		p, err := f.validate()
		if err != nil {
			return nil, err
		}
		for _, prev := range out {
			if prev.Connector.Name == p.Connector.Name {
				return nil, fmt.Errorf("connector %s is defined twice", p.Connector.Name)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("connectors: none found (want kind: connector, metadata: {name: ...}, spec: {type: oidc, ...})")
	}
	return out, nil
}

func (f File) validate() (Parsed, error) {
	name := f.Metadata.Name
	bad := func(format string, a ...any) (Parsed, error) {
		return Parsed{}, fmt.Errorf("connector %s: "+format, append([]any{name}, a...)...)
	}
	if f.Kind != Kind {
		return Parsed{}, fmt.Errorf("connector %s: kind is %q, want %q", name, f.Kind, Kind)
	}
	if f.Version != "" && f.Version != "v1" {
		return bad("version %q: want v1", f.Version)
	}
	if err := state.ValidConnectorName(name); err != nil {
		return Parsed{}, err
	}
	s := f.Spec
	if s.Type != TypeOIDC {
		return bad("spec.type %q: want oidc (SAML is not supported yet)", s.Type)
	}
	iss, err := url.Parse(s.IssuerURL)
	if s.IssuerURL == "" || err != nil || iss.Host == "" || (iss.Scheme != "https" && iss.Scheme != "http") {
		return bad("spec.issuer_url %q: want the provider's issuer, an https:// URL", s.IssuerURL)
	}
	if s.ClientID == "" {
		return bad("spec.client_id is required: the client id registered with the provider")
	}
	if s.RedirectURL != "" {
		u, err := url.Parse(s.RedirectURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Path != CallbackPath(name) {
			return bad("spec.redirect_url %q: want https://<proxy address>%s (or leave it out)", s.RedirectURL, CallbackPath(name))
		}
	}
	if len(s.ClaimsToRoles) == 0 {
		return bad("spec.claims_to_roles is empty: no login could get a role")
	}
	c := events.Connector{Name: name, Type: s.Type, Display: s.Display, IssuerURL: s.IssuerURL, ClientID: s.ClientID,
		RedirectURL: s.RedirectURL, UsernameClaim: s.UsernameClaim}
	for _, sc := range s.Scopes {
		if sc = strings.TrimSpace(sc); sc != "" && sc != "openid" && !slices.Contains(c.Scopes, sc) {
			c.Scopes = append(c.Scopes, sc)
		}
	}
	for i, m := range s.ClaimsToRoles {
		if m.Claim == "" || m.Value == "" {
			return bad("spec.claims_to_roles[%d]: claim and value are required", i)
		}
		if _, err := path.Match(m.Value, ""); err != nil {
			return bad("spec.claims_to_roles[%d].value %q: %v", i, m.Value, err)
		}
		if len(m.Roles) == 0 {
			return bad("spec.claims_to_roles[%d]: roles is empty", i)
		}
		c.ClaimsToRoles = append(c.ClaimsToRoles, events.ClaimMapping{Claim: m.Claim, Value: m.Value,
			Roles: m.Roles, DBUsers: m.DBUsers, DBNames: m.DBNames})
	}
	return Parsed{Connector: c, Secret: s.ClientSecret}, nil
}

// LoginPath is where a browser starts a login with connector name.
func LoginPath(name string) string { return "/sso/oidc/" + name + "/login" }

// CallbackPath is where the provider sends the browser back.
func CallbackPath(name string) string { return "/sso/oidc/" + name + "/callback" }
