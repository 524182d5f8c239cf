// Package sso holds single sign-on: the connectors (which identity
// providers the broker trusts, kept in STATE without their secrets), the
// mapping of a provider's claims (or SAML attributes) to roles and traits;
// the browser flows are in oidcflow.
package sso

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlsp"

	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config/strictyaml"
	"github.com/tollgate-db/tollgate/events"
)

// Kind is the YAML kind of a connector document.
const Kind = "connector"

// Connector types.
const (
	TypeOIDC = "oidc"
	TypeSAML = "saml"
)

// DefaultUsernameClaim names the user when an OIDC connector names no
// claim.
const DefaultUsernameClaim = "email"

// NameIDClaim names the user of a SAML login by default: the assertion's
// subject NameID, which the SAML flow passes as a claim of that name.
const NameIDClaim = "NameID"

// maxEntityDescriptor bounds inline IdP metadata kept in STATE.
const maxEntityDescriptor = 256 << 10

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
		// SAML.
		EntityDescriptorURL string             `yaml:"entity_descriptor_url"`
		EntityDescriptor    string             `yaml:"entity_descriptor"`
		UsernameAttribute   string             `yaml:"username_attribute"`
		AttributesToRoles   []AttributeMapping `yaml:"attributes_to_roles"`
	} `yaml:"spec"`
}

// AttributeMapping is one entry of a SAML connector's attributes_to_roles:
// as Mapping, with the attribute's name for the claim.
type AttributeMapping struct {
	Name    string   `yaml:"name"`
	Value   string   `yaml:"value"`
	Roles   []string `yaml:"roles"`
	DBUsers []string `yaml:"db_users"`
	DBNames []string `yaml:"db_names"`
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
	files, _, err := strictyaml.Documents[File](b, "connectors")
	if err != nil {
		return nil, err
	}
	var out []Parsed
	for _, f := range files {
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
		return nil, errors.New("connectors: none found (want kind: connector, metadata: {name: ...}, spec: {type: oidc or saml, ...})")
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
	switch s.Type {
	case TypeOIDC:
		return f.validateOIDC(bad)
	case TypeSAML:
		return f.validateSAML(bad)
	}
	return bad("spec.type %q: want oidc or saml", s.Type)
}

func (f File) validateOIDC(bad func(string, ...any) (Parsed, error)) (Parsed, error) {
	name, s := f.Metadata.Name, f.Spec
	if s.EntityDescriptorURL != "" || s.EntityDescriptor != "" || s.UsernameAttribute != "" || len(s.AttributesToRoles) > 0 {
		return bad("entity_descriptor_url, entity_descriptor, username_attribute and attributes_to_roles are for type saml; an oidc connector has issuer_url and claims_to_roles")
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
		cm, err := mapping("claims_to_roles", i, "claim", m.Claim, m.Value, m.Roles, m.DBUsers, m.DBNames)
		if err != nil {
			return bad("%v", err)
		}
		c.ClaimsToRoles = append(c.ClaimsToRoles, cm)
	}
	return Parsed{Connector: c, Secret: s.ClientSecret}, nil
}

// validateSAML checks a SAML connector. The service provider's entity id
// and ACS URL are not configured: they derive from the proxy's public
// address, so that they cannot disagree with where the broker listens.
func (f File) validateSAML(bad func(string, ...any) (Parsed, error)) (Parsed, error) {
	name, s := f.Metadata.Name, f.Spec
	if s.IssuerURL != "" || s.ClientID != "" || s.ClientSecret != "" || s.RedirectURL != "" || len(s.Scopes) > 0 ||
		s.UsernameClaim != "" || len(s.ClaimsToRoles) > 0 {
		return bad("issuer_url, client_id, client_secret, redirect_url, scopes, username_claim and claims_to_roles are for type oidc; a saml connector has entity_descriptor_url or entity_descriptor, username_attribute and attributes_to_roles")
	}
	switch {
	case s.EntityDescriptorURL == "" && s.EntityDescriptor == "":
		return bad("spec.entity_descriptor_url (where the identity provider publishes its SAML metadata) or spec.entity_descriptor (the metadata XML) is required")
	case s.EntityDescriptorURL != "" && s.EntityDescriptor != "":
		return bad("spec.entity_descriptor_url and spec.entity_descriptor both given: give one")
	case s.EntityDescriptorURL != "":
		u, err := url.Parse(s.EntityDescriptorURL)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return bad("spec.entity_descriptor_url %q: want the identity provider's metadata URL, https://…", s.EntityDescriptorURL)
		}
	default:
		if len(s.EntityDescriptor) > maxEntityDescriptor {
			return bad("spec.entity_descriptor is %d bytes, more than %d", len(s.EntityDescriptor), maxEntityDescriptor)
		}
		if _, err := ParseIdPMetadata([]byte(s.EntityDescriptor)); err != nil {
			return bad("spec.entity_descriptor: %v", err)
		}
	}
	if len(s.AttributesToRoles) == 0 {
		return bad("spec.attributes_to_roles is empty: no login could get a role")
	}
	c := events.Connector{Name: name, Type: s.Type, Display: s.Display, EntityDescriptorURL: s.EntityDescriptorURL,
		EntityDescriptor: s.EntityDescriptor, UsernameClaim: s.UsernameAttribute}
	for i, m := range s.AttributesToRoles {
		cm, err := mapping("attributes_to_roles", i, "name", m.Name, m.Value, m.Roles, m.DBUsers, m.DBNames)
		if err != nil {
			return bad("%v", err)
		}
		c.ClaimsToRoles = append(c.ClaimsToRoles, cm)
	}
	return Parsed{Connector: c}, nil
}

// mapping checks entry i of a claims_to_roles or attributes_to_roles list.
func mapping(list string, i int, key, claim, value string, roles, dbUsers, dbNames []string) (events.ClaimMapping, error) {
	if claim == "" || value == "" {
		return events.ClaimMapping{}, fmt.Errorf("spec.%s[%d]: %s and value are required", list, i, key)
	}
	if _, err := path.Match(value, ""); err != nil {
		return events.ClaimMapping{}, fmt.Errorf("spec.%s[%d].value %q: %v", list, i, value, err)
	}
	if len(roles) == 0 {
		return events.ClaimMapping{}, fmt.Errorf("spec.%s[%d]: roles is empty", list, i)
	}
	return events.ClaimMapping{Claim: claim, Value: value, Roles: roles, DBUsers: dbUsers, DBNames: dbNames}, nil
}

// ParseIdPMetadata reads a SAML identity provider's metadata: an
// EntityDescriptor, or an EntitiesDescriptor holding one identity
// provider. It must name at least one signing certificate, since every
// assertion is checked against them.
func ParseIdPMetadata(b []byte) (*saml.EntityDescriptor, error) {
	ed, err := samlsp.ParseMetadata(b)
	if err != nil {
		return nil, fmt.Errorf("not SAML identity provider metadata: %w", err)
	}
	if len(ed.IDPSSODescriptors) == 0 {
		return nil, errors.New("the metadata has no IDPSSODescriptor: it does not describe an identity provider")
	}
	certs := 0
	for _, d := range ed.IDPSSODescriptors {
		for _, kd := range d.KeyDescriptors {
			if kd.Use == "" || kd.Use == "signing" {
				certs += len(kd.KeyInfo.X509Data.X509Certificates)
			}
		}
	}
	if certs == 0 {
		return nil, errors.New("the metadata has no signing certificate: assertions could not be checked")
	}
	return ed, nil
}

// LoginPath is where a browser starts a login with connector name.
func LoginPath(name string) string { return "/sso/oidc/" + name + "/login" }

// ConnectorLoginPath is where a browser starts a login with c, by its type.
func ConnectorLoginPath(c events.Connector) string {
	if c.Type == TypeSAML {
		return SAMLLoginPath(c.Name)
	}
	return LoginPath(c.Name)
}

// SAMLLoginPath is where a browser starts a SAML login with connector name.
func SAMLLoginPath(name string) string { return "/sso/saml/" + name + "/login" }

// SAMLACSPath is the assertion consumer service the identity provider
// posts its response to.
func SAMLACSPath(name string) string { return "/sso/saml/" + name + "/acs" }

// SAMLMetadataPath serves the service provider's metadata; its URL is also
// the service provider's entity id.
func SAMLMetadataPath(name string) string { return "/sso/saml/" + name + "/metadata" }

// CallbackPath is where the provider sends the browser back.
func CallbackPath(name string) string { return "/sso/oidc/" + name + "/callback" }
