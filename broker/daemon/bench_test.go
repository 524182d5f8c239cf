package daemon_test

import (
	"testing"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/password"
)

// BenchmarkLogin measures password logins through the HTTPS API, each
// with a fresh client key: TLS, argon2id verification, certificate
// issuance and the strict audit of user.login and cert.issue. The argon2id
// parameters dominate, so both OWASP configurations are measured.
func BenchmarkLogin(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    password.Params
	}{{"argon2id-m=19MiB,t=2,p=1", password.OWASP19M}, {"argon2id-m=46MiB,t=1,p=1", password.OWASP46M}} {
		b.Run(tc.name, func(b *testing.B) {
			br := startBroker(b, login.Options{Params: tc.p})
			c := br.client(b, nil)
			if _, _, err := br.login(b, c, "bench", goodPassword, br.addUser(b, "bench", "access")); err != nil {
				b.Fatal(err)
			}
			key := pubPEM(b, newKey(b))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := ctxT(b)
				for pb.Next() {
					if _, err := c.Login(ctx, api.LoginRequest{User: "bench", Password: goodPassword, PublicKey: key}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
