package login

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate-db/tollgate/broker/state"
)

// RegisterDatabases records the databases an agent on another machine
// serves, for the host id of the host certificate it presents (certs, from
// mTLS): whatever host id dbs name is replaced by it. A database another
// host registered and still heartbeats is not taken over (state.ErrInUse).
// The agent's own connection to NATS need not write STATE.
func (s *Service) RegisterDatabases(ctx context.Context, certs []*x509.Certificate, dbs []state.NewDatabase, m Meta) ([]state.Database, error) {
	hostID, err := s.verifyAgent(certs, "registration")
	if err != nil {
		return nil, err
	}
	if len(dbs) == 0 {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "registration: no databases"}
	}
	by := state.Actor{User: "host:" + hostID}
	out := make([]state.Database, 0, len(dbs))
	for _, nd := range dbs {
		nd.HostID, nd.Exclusive = hostID, true
		d, err := s.store.RegisterDatabase(ctx, by, nd)
		if err != nil {
			if errors.Is(err, state.ErrInUse) {
				s.log.Warn("registration refused", "host_id", hostID, "database", nd.Name, "source", m.Source, "err", err)
			}
			return nil, fmt.Errorf("registration: %w", err)
		}
		out = append(out, d)
	}
	return out, nil
}
