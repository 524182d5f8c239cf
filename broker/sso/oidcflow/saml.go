package oidcflow

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crewjam/saml"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/events"
)

const (
	// samlBindCookie ties the ACS post to the browser that was sent to the
	// identity provider, as bindCookie does for OIDC. SameSite=None: the
	// provider's form posts the response cross-site, and a Lax cookie is
	// not sent with a cross-site POST. The value is random and checked
	// against the attempt, so sending it cross-site gives nothing away.
	samlBindCookie = "__Host-tollgate-saml"
	// maxSAMLResponse bounds a posted response and fetched metadata.
	maxSAMLResponse = 1 << 20
)

// samlStart sends the browser to the identity provider with an
// AuthnRequest (HTTP-Redirect binding). The RelayState names the attempt;
// the request id it must answer is kept in it.
func (s *Service) samlStart(w http.ResponseWriter, r *http.Request) {
	x := login.External{Method: events.LoginSAML, Connector: r.PathValue("name"), Meta: apiserver.RequestMeta(r)}
	a, c, ok := s.begin(w, r, x, sso.TypeSAML)
	if !ok {
		return
	}
	sp, err := s.serviceProvider(r.Context(), c)
	if err != nil {
		s.refuse(w, r, x, a, refusal{http.StatusBadGateway, events.LoginSSOProviderError,
			fmt.Sprintf("the identity provider of %s cannot be used: %v", c.Name, err), "metadata: " + err.Error()})
		return
	}
	dest := sp.GetSSOBindingLocation(saml.HTTPRedirectBinding)
	if dest == "" {
		s.refuse(w, r, x, a, refusal{http.StatusBadGateway, events.LoginSSOProviderError,
			fmt.Sprintf("the identity provider of %s offers no HTTP-Redirect single sign-on service in its metadata", c.Name), "no redirect binding"})
		return
	}
	req, err := sp.MakeAuthenticationRequest(dest, saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	if err != nil {
		s.refuse(w, r, x, a, refusal{http.StatusInternalServerError, events.LoginSSOProviderError,
			"cannot make the SAML request: " + err.Error(), "authn request: " + err.Error()})
		return
	}
	a.state, a.binding, a.requestID = random(), random(), req.ID
	u, err := req.Redirect(a.state, sp)
	if err != nil {
		s.refuse(w, r, x, a, refusal{http.StatusInternalServerError, events.LoginSSOProviderError,
			"cannot make the SAML request: " + err.Error(), "authn request: " + err.Error()})
		return
	}
	if !s.put(s.flows, a.state, a) {
		s.refuse(w, r, x, a, refusal{http.StatusServiceUnavailable, events.LoginBadRequest,
			"too many single sign-on logins in progress; try again in a few minutes", "too many attempts"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: samlBindCookie, Value: a.binding, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteNoneMode, MaxAge: int(attemptTTL / time.Second)})
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// samlACS finishes the login whose response the identity provider posts
// (HTTP-POST binding).
func (s *Service) samlACS(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	x := login.External{Method: events.LoginSAML, Connector: name, Meta: apiserver.RequestMeta(r)}
	r.Body = http.MaxBytesReader(w, r.Body, maxSAMLResponse)
	if err := r.ParseForm(); err != nil {
		s.refuse(w, r, x, nil, refusal{http.StatusBadRequest, events.LoginBadRequest,
			"the SAML response cannot be read: " + err.Error(), "form: " + err.Error()})
		return
	}
	a := s.take(s.flows, r.PostForm.Get("RelayState"))
	if a == nil || a.connector != name || a.requestID == "" {
		// No attempt: a response nobody here asked for (IdP-initiated, or
		// forged), or one already used.
		s.refuse(w, r, x, nil, refusal{http.StatusBadRequest, events.LoginSSOBadState,
			"this sign-in is unknown, expired or was already used; start again from Tollgate", "unknown, expired or reused RelayState"})
		return
	}
	if ck, err := r.Cookie(samlBindCookie); err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(a.binding)) != 1 {
		s.refuse(w, r, x, a, refusal{http.StatusBadRequest, events.LoginSSOBadState,
			"this sign-in was not started by this browser; start again", "response presented without the browser binding of its attempt"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: samlBindCookie, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteNoneMode, MaxAge: -1})
	c, ok := s.o.Store.Connector(name)
	if !ok || c.Type != sso.TypeSAML {
		s.refuse(w, r, x, a, refusal{http.StatusNotFound, events.LoginSSOUnknownConnector,
			fmt.Sprintf("no single sign-on connector %q (removed during the sign-in?)", name), "unknown connector"})
		return
	}
	raw, err := base64.StdEncoding.DecodeString(r.PostForm.Get("SAMLResponse"))
	if err != nil || len(raw) == 0 {
		s.refuse(w, r, x, a, refusal{http.StatusBadRequest, events.LoginBadRequest,
			"the identity provider's post holds no SAMLResponse (base64)", "no or bad SAMLResponse"})
		return
	}
	sp, err := s.serviceProvider(r.Context(), c)
	if err != nil {
		s.refuse(w, r, x, a, refusal{http.StatusBadGateway, events.LoginSSOProviderError,
			fmt.Sprintf("the identity provider of %s cannot be used: %v", c.Name, err), "metadata: " + err.Error()})
		return
	}
	// The response must answer this attempt's request and no other; the
	// destination is checked against the ACS URL derived from the public
	// address, not the Host header.
	as, err := sp.ParseXMLResponse(raw, []string{a.requestID}, sp.AcsURL)
	if err != nil {
		s.refuse(w, r, x, a, samlRefusal(err))
		return
	}
	claims := assertionClaims(as)
	id, err := sso.Identity(c, claims)
	if err != nil {
		ref := mappingRefusal(err)
		var me *sso.MappingError
		if errors.As(err, &me) {
			x.Identity.User = me.User
		}
		s.refuse(w, r, x, a, ref)
		return
	}
	// SAML logins carry no second factor the broker relies on: an
	// AuthnContextClassRef is the provider's own vocabulary, so roles
	// with require_mfa are withheld.
	x.Identity = id
	s.finish(w, r, a, x)
}

// samlMetadata serves the service provider's metadata, to register
// Tollgate with the identity provider.
func (s *Service) samlMetadata(w http.ResponseWriter, r *http.Request) {
	c, ok := s.o.Store.Connector(r.PathValue("name"))
	if !ok || c.Type != sso.TypeSAML {
		http.Error(w, fmt.Sprintf("no saml single sign-on connector %q", r.PathValue("name")), http.StatusNotFound)
		return
	}
	b, err := xml.MarshalIndent(s.sp(c, nil).Metadata(), "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	_, _ = w.Write(b)
}

// sp is connector c's service provider: entity id and ACS URL derive from
// the proxy's public address. It holds no key: requests are not signed and
// no encryption key is offered, so the provider sends assertions in the
// clear over TLS, signed.
func (s *Service) sp(c api.Connector, md *saml.EntityDescriptor) *saml.ServiceProvider {
	base := url.URL{Scheme: "https", Host: s.o.ProxyAddr}
	meta, acs := base, base
	meta.Path, acs.Path = sso.SAMLMetadataPath(c.Name), sso.SAMLACSPath(c.Name)
	return &saml.ServiceProvider{
		EntityID:                         meta.String(),
		MetadataURL:                      meta,
		AcsURL:                           acs,
		IDPMetadata:                      md,
		AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding},
		// A login is answered once, to the request this browser made.
		AllowIDPInitiated: false,
	}
}

// serviceProvider reads the identity provider's metadata (inline or
// fetched) and makes the service provider of connector c.
func (s *Service) serviceProvider(ctx context.Context, c api.Connector) (*saml.ServiceProvider, error) {
	doc := []byte(c.EntityDescriptor)
	if c.EntityDescriptorURL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.EntityDescriptorURL, nil)
		if err != nil {
			return nil, err
		}
		resp, err := s.o.HTTPClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: HTTP %d", c.EntityDescriptorURL, resp.StatusCode)
		}
		if doc, err = io.ReadAll(io.LimitReader(resp.Body, maxSAMLResponse)); err != nil {
			return nil, fmt.Errorf("GET %s: %w", c.EntityDescriptorURL, err)
		}
	}
	md, err := sso.ParseIdPMetadata(doc)
	if err != nil {
		return nil, err
	}
	return s.sp(c, md), nil
}

// samlRefusal names what was wrong with a response. crewjam/saml's error
// says only "Authentication failed"; its cause is what the audit trail
// and the user need.
func samlRefusal(err error) refusal {
	detail := err.Error()
	var ire *saml.InvalidResponseError
	if errors.As(err, &ire) && ire.PrivateErr != nil {
		detail = ire.PrivateErr.Error()
	}
	detail = clip(detail, 300)
	var bad saml.ErrBadStatus
	switch {
	case errors.As(err, &bad):
		return refusal{http.StatusForbidden, events.LoginSSOProviderError,
			"the identity provider refused the sign-in: " + clip(bad.Status, 200), "status " + detail}
	case errors.Is(err, saml.ErrRequestIDMismatch):
		return refusal{http.StatusForbidden, events.LoginSSOBadRequestID,
			"the SAML response answers no sign-in this browser started (InResponseTo); start again", detail}
	case errors.Is(err, saml.ErrAudienceMismatch):
		return refusal{http.StatusForbidden, events.LoginSSOWrongAudience,
			"the SAML assertion was issued for another service provider (audience); check the entity id registered with the identity provider", detail}
	case errors.Is(err, saml.ErrDestinationMismatch):
		return refusal{http.StatusForbidden, events.LoginSSOWrongAudience,
			"the SAML response was sent to another address (destination or recipient); check the ACS URL registered with the identity provider", detail}
	case errors.Is(err, saml.ErrExpired), errors.Is(err, saml.ErrNotYetValid):
		return refusal{http.StatusForbidden, events.LoginSSOExpired,
			"the SAML assertion is expired or not yet valid; start again (and check the clocks)", detail}
	case errors.Is(err, saml.ErrInvalidSignature), errors.Is(err, saml.ErrUntrustedCertificate),
		errors.Is(err, saml.ErrCertificateNotValidNow),
		// crewjam/saml's error for a response and assertion both unsigned
		// is unexported: its text is all there is to match.
		strings.Contains(detail, "signature element not present"):
		return refusal{http.StatusForbidden, events.LoginSSOBadSignature,
			"the SAML response is not signed by the identity provider (a signed response or assertion is required)", detail}
	}
	return refusal{http.StatusForbidden, events.LoginSSOBadToken, "the SAML response is not valid: " + detail, detail}
}

// mappingRefusal turns a failed mapping into a refusal.
func mappingRefusal(err error) refusal {
	reason := events.LoginSSONoRole
	var me *sso.MappingError
	if errors.As(err, &me) && me.NoUser {
		reason = events.LoginSSONoUsername
	}
	return refusal{http.StatusForbidden, reason, "sign-in refused: " + err.Error(), err.Error()}
}

// assertionClaims reads an assertion's attributes as claims, under their
// name and their friendly name, and its subject's NameID as NameIDClaim
// unless an attribute has that name.
func assertionClaims(as *saml.Assertion) map[string]any {
	claims := map[string]any{}
	add := func(k string, v string) {
		if k == "" {
			return
		}
		l, _ := claims[k].([]any)
		claims[k] = append(l, v)
	}
	for _, st := range as.AttributeStatements {
		for _, at := range st.Attributes {
			for _, v := range at.Values {
				add(at.Name, v.Value)
				if at.FriendlyName != at.Name {
					add(at.FriendlyName, v.Value)
				}
			}
		}
	}
	if _, ok := claims[sso.NameIDClaim]; !ok && as.Subject != nil && as.Subject.NameID != nil {
		claims[sso.NameIDClaim] = as.Subject.NameID.Value
	}
	return claims
}
