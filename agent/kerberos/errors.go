package kerberos

import (
	"fmt"
	"strings"
)

// Error is a Kerberos failure with its cause named for an administrator;
// Output is what the MIT tool printed (no secrets: kinit prints no keys).
type Error struct {
	Cause  string
	Output string
}

func (e *Error) Error() string { return e.Cause }

func lastLine(out string) string {
	out = strings.TrimSpace(out)
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return out
}

// kinitError names the cause of a failed PKINIT login, following the
// troubleshooting of the SQL Server guide.
func kinitError(p *Provider, principal, failures, out string, err error) error {
	o := strings.ToLower(failures + out)
	why := lastLine(out)
	if f := strings.TrimSpace(failures); f != "" {
		// The first failure is the cause; what follows is kinit
		// falling back to a password.
		why, _, _ = strings.Cut(f, "\n")
	}
	who := principal + "@" + p.realm
	var cause string
	switch {
	case strings.Contains(o, "client not trusted"), strings.Contains(o, "certificate not trusted"),
		strings.Contains(o, "kdc_err_client_not_trusted"), strings.Contains(o, "invalid certificate"),
		strings.Contains(o, "can't verify certificate"),
		strings.Contains(o, "revocation status unknown"), strings.Contains(o, "certificate has been revoked"):
		cause = fmt.Sprintf("the KDC does not trust the db-client CA for PKINIT (%s): publish it to the domain's NTAuth store and to the domain controllers' trusted roots (tollgate auth export --type=db-client-der; certutil -dspublish -f db-client.cer NTAuthCA), and publish its CRL (see deploy/ad.md)", why)
	case strings.Contains(o, "kdc name mismatch"):
		cause = fmt.Sprintf("the KDC's certificate does not name ad.kdc_host_name %q: set kdc_host_name to the domain controller's host name as its certificate carries it (%s)", p.kdcHst, why)
	case strings.Contains(o, "cannot contact any kdc"), strings.Contains(o, "cannot resolve network address"),
		strings.Contains(o, "connection refused"), strings.Contains(o, "name or service not known"):
		cause = fmt.Sprintf("cannot reach the KDC at ad.kdc_host_name %q for realm %s: check the host name and that port 88 of the domain controller is reachable from the agent (%s)", p.ad.KDCHostName, p.realm, why)
	case strings.Contains(o, "failed to verify received certificate"), strings.Contains(o, "could not verify dh reply"),
		strings.Contains(o, "certificate verify failed"), strings.Contains(o, "certificate mismatch"),
		strings.Contains(o, "unable to get local issuer"), strings.Contains(o, "self signed certificate"),
		strings.Contains(o, "self-signed certificate"):
		cause = fmt.Sprintf("the agent does not trust the KDC's certificate: ad.ldap_cert must hold the CA that issued the domain controller's certificate (%s)", why)
	case strings.Contains(o, "client name mismatch"):
		cause = fmt.Sprintf("the KDC mapped the PKINIT certificate to another account than %s (%s)", who, why)
	case strings.Contains(o, "not found in kerberos database"):
		cause = fmt.Sprintf("there is no account %s in the domain: the database user must be an AD user (%s)", who, why)
	case strings.Contains(o, "clock skew"):
		cause = fmt.Sprintf("the clocks of the agent and the domain controller differ too much (%s)", why)
	case strings.Contains(o, "key purpose"), strings.Contains(o, "inappropriate type of checksum"):
		cause = fmt.Sprintf("the KDC refused the PKINIT certificate's usage (%s)", why)
	default:
		cause = fmt.Sprintf("PKINIT login as %s failed: %s", who, why)
		if why == "" {
			cause += err.Error()
		}
	}
	return &Error{Cause: "kerberos: " + cause, Output: out}
}

// kvnoError names the cause of a failed service ticket request.
func kvnoError(p *Provider, out string, err error) error {
	o := strings.ToLower(out)
	var cause string
	switch {
	case strings.Contains(o, "not found in kerberos database"):
		cause = fmt.Sprintf("the SPN %s is not registered in the domain: register it on the SQL Server's service account (setspn -S %s ACCOUNT) or fix ad.spn (%s)", p.spn, p.spn, lastLine(out))
	case strings.Contains(o, "cannot contact any kdc"), strings.Contains(o, "cannot resolve network address"):
		cause = fmt.Sprintf("cannot reach the KDC at ad.kdc_host_name %q (%s)", p.ad.KDCHostName, lastLine(out))
	default:
		cause = fmt.Sprintf("getting a service ticket for %s failed: %s", p.spn, lastLine(out))
		if lastLine(out) == "" {
			cause += err.Error()
		}
	}
	return &Error{Cause: "kerberos: " + cause, Output: out}
}

// keytabError names the cause of a failed keytab login.
func keytabError(p *Provider, principal string, err error) error {
	msg := err.Error()
	o := strings.ToLower(msg)
	var cause string
	switch {
	case strings.Contains(o, "s_principal_unknown"):
		cause = fmt.Sprintf("the SPN %s is not registered in the domain: register it on the SQL Server's service account or fix ad.spn (%s)", p.spn, msg)
	case strings.Contains(o, "c_principal_unknown"):
		cause = fmt.Sprintf("there is no account %s@%s in the domain (%s)", principal, p.realm, msg)
	case strings.Contains(o, "preauth_failed"), strings.Contains(o, "no key"), strings.Contains(o, "matching key not found"):
		cause = fmt.Sprintf("ad.keytab_file holds no valid key for %s@%s: export it again (ktpass) after the account's password last changed (%s)", principal, p.realm, msg)
	case strings.Contains(o, "networking_error"), strings.Contains(o, "connection refused"), strings.Contains(o, "no kdcs"):
		cause = fmt.Sprintf("cannot reach the KDC at ad.kdc_host_name %q (%s)", p.ad.KDCHostName, msg)
	default:
		cause = fmt.Sprintf("keytab login as %s@%s failed: %s", principal, p.realm, msg)
	}
	return &Error{Cause: "kerberos: " + cause}
}
