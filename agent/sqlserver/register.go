package sqlserver

import (
	"context"
	"path/filepath"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/protocol"
)

func init() {
	agent.RegisterEngine(protocol.SQLServer, agent.EngineRegistration{
		New: func(ctx context.Context, p *agent.EngineParams) (agent.Engine, error) {
			return NewStandard(ctx, p.CAs, filepath.Join(p.DataDir, "agent", "krb5"), p.Host, p.Log)
		},
		LocalCAs: "its Kerberos PKINIT certificates are signed with the CAs of the data dir",
	})
}
