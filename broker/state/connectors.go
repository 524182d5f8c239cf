package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// AggConnector is the aggregate of single sign-on connectors.
const AggConnector = "connector"

// connectorSecretKey is where CREDENTIALS keeps a connector's client
// secret. User keys never hold a '.', so the two cannot collide.
func connectorSecretKey(name string) string { return "connector." + escapeKey(name) }

// UpsertConnector stores a connector, creating it (connector.create) or
// replacing it (connector.update), and its client secret in CREDENTIALS;
// the secret never enters STATE. The caller validates the connector.
func (s *Store) UpsertConnector(ctx context.Context, by Actor, c events.Connector, secret string) (created bool, err error) {
	if err := ValidConnectorName(c.Name); err != nil {
		return false, invalid("%v", err)
	}
	c = cloneConnector(c)
	c.SecretSet = secret != ""
	// The secret is written first: a connector.create whose secret failed
	// to store would be a connector that cannot log anyone in.
	if secret != "" {
		if _, err := s.credsKV.Put(ctx, connectorSecretKey(c.Name), []byte(secret)); err != nil {
			return false, fmt.Errorf("state: store the client secret of connector %s: %w", c.Name, err)
		}
	} else if err := s.credsKV.Delete(ctx, connectorSecretKey(c.Name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, fmt.Errorf("state: remove the client secret of connector %s: %w", c.Name, err)
	}
	ev, err := s.change(ctx, by, subject(AggConnector, c.Name), func() (events.Event, error) {
		cur, ok := s.connectors[c.Name]
		switch {
		case !ok:
			return &events.ConnectorCreate{Connector: c}, nil
		case reflect.DeepEqual(cur, c):
			return nil, nil
		}
		return &events.ConnectorUpdate{Connector: c}, nil
	})
	if err != nil {
		return false, err
	}
	_, created = ev.(*events.ConnectorCreate)
	return created, nil
}

// DeleteConnector removes a connector and its client secret.
func (s *Store) DeleteConnector(ctx context.Context, by Actor, name string) error {
	_, err := s.change(ctx, by, subject(AggConnector, name), func() (events.Event, error) {
		if _, ok := s.connectors[name]; !ok {
			return nil, fmt.Errorf("connector %s: %w (tollgate sso ls lists them)", name, ErrNotFound)
		}
		return &events.ConnectorDelete{Name: name}, nil
	})
	if err != nil {
		return err
	}
	if err := s.credsKV.Delete(ctx, connectorSecretKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("state: connector %s removed, but removing its client secret failed: %w", name, err)
	}
	return nil
}

// ConnectorSecret returns a connector's client secret, "" when it has none.
func (s *Store) ConnectorSecret(ctx context.Context, name string) (string, error) {
	e, err := s.credsKV.Get(ctx, connectorSecretKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("state: client secret of connector %s: %w", name, err)
	}
	return string(e.Value()), nil
}

// Connectors returns the connectors sorted by name.
func (p *Projection) Connectors() []events.Connector {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]events.Connector, 0, len(p.connectors))
	for _, c := range p.connectors {
		out = append(out, cloneConnector(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Connector returns one connector.
func (p *Projection) Connector(name string) (events.Connector, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.connectors[name]
	if !ok {
		return events.Connector{}, false
	}
	return cloneConnector(c), true
}

// ValidConnectorName says why name cannot name a connector, or nil. It
// appears in URLs (/sso/oidc/NAME/login) and on the command line.
func ValidConnectorName(name string) error {
	if !dbNameRE.MatchString(name) {
		return fmt.Errorf("connector name %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

func cloneConnector(c events.Connector) events.Connector {
	c.Scopes = slices.Clone(c.Scopes)
	m := make([]events.ClaimMapping, len(c.ClaimsToRoles))
	for i, x := range c.ClaimsToRoles {
		x.Roles, x.DBUsers, x.DBNames = slices.Clone(x.Roles), slices.Clone(x.DBUsers), slices.Clone(x.DBNames)
		m[i] = x
	}
	c.ClaimsToRoles = m
	return c
}
