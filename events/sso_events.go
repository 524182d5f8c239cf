package events

// Events of single sign-on connectors: an identity provider the broker
// trusts to name its users. They are STATE events (state.connector.<name>)
// and admin actions: the envelope's user and roles are the administrator's.
// The connector's client secret is never part of them; it is kept in the
// broker's CREDENTIALS bucket.

func init() {
	Register[ConnectorCreate]("connector.create", "TGSO001I",
		"A single sign-on connector was added; the event holds it without its client secret.")
	Register[ConnectorUpdate]("connector.update", "TGSO002I",
		"A single sign-on connector was replaced; the event holds it without its client secret.")
	Register[ConnectorDelete]("connector.delete", "TGSO003I",
		"A single sign-on connector was removed.")
}

// Connector is a single sign-on connector as stored: everything but the
// client secret.
type Connector struct {
	Name string `json:"name" jsonschema:"description=Connector name: what tg login --auth and the sign-in page use"`
	// Type is the protocol: oidc or saml.
	Type      string `json:"type" jsonschema:"enum=oidc,enum=saml,description=Protocol of the identity provider"`
	Display   string `json:"display,omitempty" jsonschema:"description=Label of the sign-in button"`
	IssuerURL string `json:"issuer_url,omitempty" jsonschema:"description=OpenID Provider issuer URL (oidc)"`
	ClientID  string `json:"client_id,omitempty" jsonschema:"description=OAuth 2.0 client id registered with the provider (oidc)"`
	// A SAML identity provider's metadata: where it is published, or the
	// document itself. Metadata holds only public keys and endpoints.
	EntityDescriptorURL string   `json:"entity_descriptor_url,omitempty" jsonschema:"description=URL of the SAML identity provider's metadata (saml)"`
	EntityDescriptor    string   `json:"entity_descriptor,omitempty" jsonschema:"description=The SAML identity provider's metadata XML (saml)"`
	RedirectURL         string   `json:"redirect_url,omitempty" jsonschema:"description=Callback URL registered with the provider"`
	Scopes              []string `json:"scopes,omitempty" jsonschema:"description=Scopes asked for besides openid"`
	UsernameClaim       string   `json:"username_claim,omitempty" jsonschema:"description=Claim (oidc) or attribute (saml) that names the user"`
	// SecretSet says a client secret is stored for the connector.
	SecretSet bool `json:"secret_set" jsonschema:"description=A client secret is stored (never its value)"`
	// ClaimsToRoles holds a SAML connector's attributes_to_roles too: an
	// attribute is mapped as a claim is.
	ClaimsToRoles []ClaimMapping `json:"claims_to_roles" jsonschema:"description=Claim (or SAML attribute) values and the roles and traits they grant"`
}

// ClaimMapping grants roles and traits to a login whose claim has a value
// matching Value (a glob: * matches any run of characters).
type ClaimMapping struct {
	Claim   string   `json:"claim" jsonschema:"description=Claim (or SAML attribute) name, e.g. groups or email"`
	Value   string   `json:"value" jsonschema:"description=Value or glob pattern the claim must match"`
	Roles   []string `json:"roles" jsonschema:"description=Roles granted"`
	DBUsers []string `json:"db_users,omitempty" jsonschema:"description=Values added to the db_users trait"`
	DBNames []string `json:"db_names,omitempty" jsonschema:"description=Values added to the db_names trait"`
}

// ConnectorCreate records a new connector.
type ConnectorCreate struct {
	Envelope
	Connector Connector `json:"connector" jsonschema:"description=The connector without its secret"`
}

// ConnectorUpdate records a connector replaced by a new version.
type ConnectorUpdate struct {
	Envelope
	Connector Connector `json:"connector" jsonschema:"description=The new connector without its secret"`
}

// ConnectorDelete records a removed connector.
type ConnectorDelete struct {
	Envelope
	Name string `json:"name" jsonschema:"description=Connector name"`
}
