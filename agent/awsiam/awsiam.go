// Package awsiam signs the IAM authentication tokens with which the agent
// logs in to databases behind AWS RDS Proxy (aws: {region, rds_proxy:
// true, assume_role_arn, external_id}). Credentials come from the AWS SDK's
// default chain (environment, shared files, container and instance
// metadata); with assume_role_arn they are exchanged with STS for the
// role's (role chaining). A token is a SigV4 presigned "connect" request
// for host:port and the database user, valid 15 minutes: the agent signs a
// new one for every upstream connection and sends it as the password,
// only over TLS.
package awsiam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/config"
)

// MethodRDSIAM names the method in login events.
const MethodRDSIAM = "rds-iam"

// RoleSessionName is the session name of assumed roles, as CloudTrail
// shows it.
const RoleSessionName = "tollgate-agent"

// Options tune signers. The zero value uses the SDK's default chain and
// the real STS.
type Options struct {
	// Credentials, when set, replaces the default chain (tests use
	// static credentials).
	Credentials aws.CredentialsProvider
	// STSEndpoint, when set, is where AssumeRole goes (tests use a fake
	// STS).
	STSEndpoint string
	// HTTPClient is used for STS and the default chain's HTTP sources.
	HTTPClient *http.Client
}

// Signer signs tokens for one aws: configuration.
type Signer struct {
	region string
	creds  aws.CredentialsProvider
}

// NewSigner resolves the credentials of c. It contacts nothing: the
// default chain and STS are asked on the first Token.
func NewSigner(ctx context.Context, c config.AWS, o Options) (*Signer, error) {
	if c.Region == "" {
		return nil, errors.New("aws.region is required to sign RDS IAM authentication tokens")
	}
	creds := o.Credentials
	var httpc aws.HTTPClient
	if o.HTTPClient != nil {
		httpc = o.HTTPClient
	}
	if creds == nil {
		loads := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.Region)}
		if httpc != nil {
			loads = append(loads, awsconfig.WithHTTPClient(httpc))
		}
		cfg, err := awsconfig.LoadDefaultConfig(ctx, loads...)
		if err != nil {
			return nil, fmt.Errorf("aws: loading the default credential chain: %w", err)
		}
		creds = cfg.Credentials
	}
	if c.AssumeRoleARN != "" {
		so := sts.Options{Region: c.Region, Credentials: creds}
		if httpc != nil {
			so.HTTPClient = httpc
		}
		if o.STSEndpoint != "" {
			so.BaseEndpoint = aws.String(o.STSEndpoint)
		}
		client := sts.New(so)
		arn, ext := c.AssumeRoleARN, c.ExternalID
		creds = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(client, arn, func(ao *stscreds.AssumeRoleOptions) {
			ao.RoleSessionName = RoleSessionName
			if ext != "" {
				ao.ExternalID = aws.String(ext)
			}
		}))
	}
	return &Signer{region: c.Region, creds: creds}, nil
}

// Token signs a token for dbUser at endpoint (host:port).
func (s *Signer) Token(ctx context.Context, endpoint, dbUser string) (string, error) {
	if dbUser == "" {
		return "", errors.New("aws: an RDS IAM token needs a database user")
	}
	tok, err := auth.BuildAuthToken(ctx, endpoint, s.region, dbUser, s.creds)
	if err != nil {
		return "", fmt.Errorf("aws: signing the RDS IAM token for %s at %s: %w", dbUser, endpoint, err)
	}
	return tok, nil
}

// Registry keeps one signer per database, built on first use from the
// database's aws: block. Its Token method is what engines call for a new
// upstream connection.
type Registry struct {
	o  Options
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	c config.AWS
	s *Signer
}

// NewRegistry returns a registry whose signers share o.
func NewRegistry(o Options) *Registry { return &Registry{o: o, m: map[string]*entry{}} }

// Token signs a token for dbUser to db, whose aws: block must set
// rds_proxy: the endpoint is the database's host and port.
func (r *Registry) Token(ctx context.Context, db *agent.Database, dbUser string) (string, error) {
	c := db.Config.AWS
	if !c.RDSProxy {
		return "", fmt.Errorf("database %q does not set aws.rds_proxy", db.Config.Name)
	}
	r.mu.Lock()
	e, ok := r.m[db.Config.Name]
	if !ok || e.c != c {
		s, err := NewSigner(ctx, c, r.o)
		if err != nil {
			r.mu.Unlock()
			return "", fmt.Errorf("database %q: %w", db.Config.Name, err)
		}
		e = &entry{c: c, s: s}
		r.m[db.Config.Name] = e
	}
	r.mu.Unlock()
	return e.s.Token(ctx, db.Addr, dbUser)
}
