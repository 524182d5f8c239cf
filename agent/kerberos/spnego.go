package kerberos

import (
	"fmt"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
)

// SecContext is the client side of one SPNEGO exchange.
type SecContext struct {
	// Token is the first token to send: a SPNEGO NegTokenInit carrying a
	// Kerberos AP-REQ for the SPN.
	Token []byte
	// Principal is the client principal (user@REALM); SPN the service.
	Principal, SPN string
	done           bool
}

func newSecContext(cl *client.Client, spn, principal string) (*SecContext, error) {
	tkt, key, ok := cl.GetCachedTicket(spn)
	if !ok {
		var err error
		if tkt, key, err = cl.GetServiceTicket(spn); err != nil {
			return nil, fmt.Errorf("kerberos: no service ticket for %s: %w", spn, err)
		}
	}
	init, err := spnego.NewNegTokenInitKRB5(cl, tkt, key)
	if err != nil {
		return nil, fmt.Errorf("kerberos: building the AP-REQ for %s: %w", spn, err)
	}
	tok := spnego.SPNEGOToken{Init: true, NegTokenInit: init}
	b, err := tok.Marshal()
	if err != nil {
		return nil, fmt.Errorf("kerberos: encoding the SPNEGO token: %w", err)
	}
	return &SecContext{Token: b, Principal: principal, SPN: spn}, nil
}

// Done reports whether the server accepted the context.
func (c *SecContext) Done() bool { return c.done }

// Continue takes the server's token and returns the next token to send
// (none for Kerberos, which completes in one round) or why the server
// refused.
func (c *SecContext) Continue(server []byte) ([]byte, error) {
	isInit, v, err := spnego.UnmarshalNegToken(server)
	if err != nil {
		// A bare Kerberos token (no SPNEGO wrapping) may carry a
		// KRB-ERROR.
		var kt spnego.KRB5Token
		if kerr := kt.Unmarshal(server); kerr == nil {
			if kt.IsKRBError() {
				return nil, krbErrorText(c.SPN, kt.KRBError)
			}
			c.done = true
			return nil, nil
		}
		return nil, fmt.Errorf("kerberos: the server's SPNEGO token does not decode: %v", err)
	}
	if isInit {
		return nil, fmt.Errorf("kerberos: the server answered with a NegTokenInit")
	}
	resp := v.(spnego.NegTokenResp)
	if len(resp.ResponseToken) > 0 {
		var kt spnego.KRB5Token
		if err := kt.Unmarshal(resp.ResponseToken); err == nil && kt.IsKRBError() {
			return nil, krbErrorText(c.SPN, kt.KRBError)
		}
	}
	switch resp.State() {
	case spnego.NegStateAcceptCompleted:
		c.done = true
		return nil, nil
	case spnego.NegStateReject:
		return nil, fmt.Errorf("kerberos: the server rejected the Kerberos ticket for %s (SPNEGO reject): check that the SPN is registered to the service account SQL Server runs as", c.SPN)
	}
	return nil, fmt.Errorf("kerberos: the server asked to continue the SPNEGO exchange (state %d), which a Kerberos login does not need", resp.NegState)
}

// krbErrorText explains a KRB-ERROR the server returned.
func krbErrorText(spn string, e messages.KRBError) error {
	what := errorcode.Lookup(e.ErrorCode)
	switch e.ErrorCode {
	case errorcode.KRB_AP_ERR_SKEW:
		return fmt.Errorf("kerberos: the SQL Server refused the ticket: clocks of the agent and the server differ too much (%s)", what)
	case errorcode.KRB_AP_ERR_MODIFIED, errorcode.KRB_AP_ERR_BADKEYVER, errorcode.KRB_AP_ERR_NOKEY:
		return fmt.Errorf("kerberos: the SQL Server cannot decrypt the ticket for %s: the SPN is registered to another account than the one SQL Server runs as, or its key changed (%s)", spn, what)
	}
	if e.EText != "" {
		what += ": " + e.EText
	}
	return fmt.Errorf("kerberos: the SQL Server refused the ticket for %s: %s", spn, what)
}
