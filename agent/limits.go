package agent

import (
	"fmt"
	"sync"
)

// connLimits counts the connections the agent serves, in all and by user,
// for db_service.max_connections and max_connections_per_user.
type connLimits struct {
	mu     sync.Mutex
	total  int
	byUser map[string]int
}

// acquire counts one more connection of user, or says which limit it is
// past (0 disables a limit). release must be called once the connection
// ends.
func (l *connLimits) acquire(maxTotal, maxPerUser int, user string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if maxTotal > 0 && l.total >= maxTotal {
		return nil, fmt.Errorf("%w: the agent serves its limit of %d connections (db_service.max_connections); try again later", ErrTooManyConnections, maxTotal)
	}
	if maxPerUser > 0 && l.byUser[user] >= maxPerUser {
		return nil, fmt.Errorf("%w: user %q has its limit of %d connections open (db_service.max_connections_per_user)", ErrTooManyConnections, user, maxPerUser)
	}
	if l.byUser == nil {
		l.byUser = map[string]int{}
	}
	l.total++
	l.byUser[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.byUser[user]--; l.byUser[user] <= 0 {
				delete(l.byUser, user)
			}
		})
	}, nil
}
