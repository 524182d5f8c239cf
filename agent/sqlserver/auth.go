package sqlserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/awsiam"
	"github.com/tollgate-db/tollgate/agent/kerberos"
)

// Credentials are what the agent logs in to SQL Server with for one
// upstream connection: a SQL login (User and Password: an RDS IAM token
// for RDS Proxy), or integrated authentication (SSPI: the first token,
// Continue for the server's answers). They are never recorded.
type Credentials struct {
	// Method names the method for the login event: kerberos-pkinit,
	// kerberos-keytab, rds-iam or sql-password.
	Method string

	User     string
	Password string

	SSPI []byte
	// Continue takes each SSPI token the server sends and returns the
	// token to answer with (nil when there is none to send).
	Continue func(server []byte) ([]byte, error)
	// Principal and SPN describe a Kerberos login for the audit record.
	Principal, SPN string
}

// Authenticator gives the credentials of a new upstream connection to db
// as dbUser.
type Authenticator interface {
	Credentials(ctx context.Context, db *agent.Database, dbUser string) (*Credentials, error)
}

// ConfigAuth chooses each database's method from its configuration:
// aws.rds_proxy signs an RDS IAM token (sent as the LOGIN7 password),
// an ad: block logs in with Kerberos (PKINIT, or the keytab of
// ad.keytab_file).
type ConfigAuth struct {
	Kerberos *kerberos.Registry
	IAM      *awsiam.Registry
}

// Credentials implements Authenticator.
func (a *ConfigAuth) Credentials(ctx context.Context, db *agent.Database, dbUser string) (*Credentials, error) {
	c := db.Config
	switch {
	case c.AWS.RDSProxy:
		if a.IAM == nil {
			return nil, errors.New("RDS IAM authentication is not available in this agent")
		}
		tok, err := a.IAM.Token(ctx, db, dbUser)
		if err != nil {
			return nil, err
		}
		return &Credentials{Method: awsiam.MethodRDSIAM, User: dbUser, Password: tok}, nil
	case c.AD.Domain != "" || c.AD.SPN != "":
		if a.Kerberos == nil {
			return nil, errors.New("this agent has no Kerberos authentication configured")
		}
		p, err := a.Kerberos.For(c.Name, c.AD)
		if err != nil {
			return nil, err
		}
		sc, err := p.InitSecContext(ctx, dbUser)
		if err != nil {
			return nil, err
		}
		return &Credentials{Method: p.Method(), SSPI: sc.Token, Continue: sc.Continue, Principal: sc.Principal, SPN: sc.SPN}, nil
	}
	return nil, fmt.Errorf("database %q configures no way for the agent to log in to SQL Server: set ad: {domain, spn, kdc_host_name, ldap_cert} for Kerberos, or aws: {region, rds_proxy: true} for RDS Proxy", c.Name)
}
