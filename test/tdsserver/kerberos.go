package tdsserver

import (
	"errors"
	"fmt"

	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"
)

// verifyKerberos checks an SSPI token as SQL Server's Negotiate package
// does for Kerberos: a SPNEGO NegTokenInit whose mechanism token is an
// AP-REQ (or a bare Kerberos token), decrypted with the service's keytab,
// fresh and not replayed. It returns the client principal and the token
// that accepts the context.
func (s *Server) verifyKerberos(tok []byte) (string, []byte, error) {
	if s.cfg.Keytab == nil {
		return "", nil, errors.New("the server has no keytab: integrated logins are refused")
	}
	mech := tok
	var st spnego.SPNEGOToken
	if err := st.Unmarshal(tok); err == nil && st.Init {
		mech = st.NegTokenInit.MechTokenBytes
	}
	var k5 spnego.KRB5Token
	if err := k5.Unmarshal(mech); err != nil {
		return "", nil, fmt.Errorf("the SSPI token is neither SPNEGO nor Kerberos: %v", err)
	}
	if !k5.IsAPReq() {
		return "", nil, errors.New("the Kerberos token is not an AP-REQ")
	}
	// MIT KDCs issue PACs without the logon information Active Directory
	// puts there, so the PAC is not decoded.
	ok, creds, err := service.VerifyAPREQ(&k5.APReq, service.NewSettings(s.cfg.Keytab, service.DecodePAC(false)))
	if err != nil || !ok {
		return "", nil, fmt.Errorf("the AP-REQ does not verify: %v", err)
	}
	resp := spnego.SPNEGOToken{Resp: true, NegTokenResp: spnego.NegTokenResp{NegState: 0, SupportedMech: gssapi.OIDKRB5.OID()}}
	b, err := resp.Marshal()
	if err != nil {
		return "", nil, err
	}
	return creds.UserName() + "@" + creds.Domain(), b, nil
}
