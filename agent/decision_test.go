package agent_test

import (
	"testing"

	"github.com/tollgate-db/tollgate/agent"
)

func TestDenialNamesWhatWasRefused(t *testing.T) {
	cases := []struct {
		d    agent.Decision
		want string
	}{
		{agent.Decision{Refused: "db_user", Reason: "ask for dev", Rule: "dev"},
			`access denied: user "ann" may not connect to "orders" as db_user "root" on db_name "app": db_user "root" is not allowed (ask for dev) [rule: dev]`},
		{agent.Decision{Refused: "db_name"},
			`access denied: user "ann" may not connect to "orders" as db_user "root" on db_name "app": db_name "app" is not allowed`},
		{agent.Decision{Refused: "labels"},
			`access denied: user "ann" may not connect to "orders" as db_user "root" on db_name "app": the database's labels match none of the user's roles`},
		{agent.Decision{},
			`access denied: user "ann" may not connect to "orders" as db_user "root" on db_name "app": no role allows it`},
		{agent.Decision{Refused: "time"},
			`access denied: user "ann" may not connect to "orders" as db_user "root" on db_name "app": time refused`},
	}
	for _, c := range cases {
		if got := agent.Denial("ann", "orders", "root", "app", c.d); got != c.want {
			t.Errorf("Denial(%+v)\n got %s\nwant %s", c.d, got, c.want)
		}
	}
}
