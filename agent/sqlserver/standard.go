package sqlserver

import (
	"context"
	"crypto/tls"
	"log/slog"

	"github.com/tollgate-db/tollgate/agent/awsiam"
	"github.com/tollgate-db/tollgate/agent/kerberos"
	"github.com/tollgate-db/tollgate/broker/ca"
)

// NewStandard is the engine the agent service runs: Kerberos logins with
// PKINIT certificates from the db-client CA of cas (or keytabs, per
// database), credential caches under dir, RDS IAM tokens from the AWS
// default chain, and cert for clients that want TLS inside TDS. The
// credential caches are removed when ctx ends.
func NewStandard(ctx context.Context, cas *ca.Authorities, dir string, cert tls.Certificate, log *slog.Logger) (*Engine, error) {
	clientCA, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		return nil, err
	}
	krb := kerberos.NewRegistry(kerberos.Options{Issue: cas.IssueDBClient, DBClientCA: clientCA, Dir: dir, Logger: log})
	e, err := New(Options{
		Auth:   &ConfigAuth{Kerberos: krb, IAM: awsiam.NewRegistry(awsiam.Options{})},
		TLS:    &tls.Config{Certificates: []tls.Certificate{cert}},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = krb.Close() })
	return e, nil
}
