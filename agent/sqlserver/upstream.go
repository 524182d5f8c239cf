package sqlserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
)

// upstream is a logged-in connection to SQL Server.
type upstream struct {
	conn net.Conn
	// loginResp is the server's login answer for the client, without the
	// SSPI tokens meant for the agent.
	loginResp   []byte
	packetSize  int
	version     uint32
	progName    string
	progVersion uint32
	database    string
}

// loginFailed is a login the database refused; tokens are its answer.
type loginFailed struct {
	number int32
	msg    string
	tokens []byte
}

func (e *loginFailed) Error() string {
	return fmt.Sprintf("the database refused the login: error %d: %s", e.number, e.msg)
}

// tlsError names the cause of a failed TLS handshake with the database.
func tlsError(db *agent.Database, err error) error {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	inner := err
	if errors.As(err, &ve) {
		inner = ve.Err
	}
	switch {
	case errors.As(inner, &ua):
		return fmt.Errorf("the database's certificate is signed by a CA the agent does not know (database CA unknown): set tls.ca_cert_file of database %q to the CA that issued SQL Server's certificate (%v)", db.Config.Name, err)
	case errors.As(inner, &he):
		return fmt.Errorf("the database's certificate does not name %q: set tls.server_name to a name it carries, or tls.mode verify-ca (%v)", db.Host, err)
	case errors.As(inner, &ci):
		return fmt.Errorf("the database's certificate is not valid: %v", err)
	}
	return fmt.Errorf("TLS with the database: %w", err)
}

// dial connects to SQL Server, negotiates TLS inside TDS, and logs in with
// creds, carrying the client's LOGIN7 options. Any SSPI tokens the server
// sends go to creds.Continue and never to the client.
func (e *Engine) dial(ctx context.Context, db *agent.Database, l *tds.Login7, creds *Credentials) (up *upstream, err error) {
	ctx, cancel := context.WithTimeout(ctx, e.opt.StartupTimeout)
	defer cancel()
	d := net.Dialer{Timeout: e.opt.DialTimeout}
	raw, err := d.DialContext(ctx, "tcp", db.Addr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			raw.Close()
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := prelogin(raw); err != nil {
		return nil, err
	}
	tc, err := startTLS(ctx, raw, db)
	if err != nil {
		return nil, err
	}
	ul := upstreamLogin(l, db, creds)
	payload, err := ul.Append(nil)
	if err != nil {
		return nil, err
	}
	if _, err := tc.Write(tds.AppendPackets(nil, tds.PacketLogin7, payload, tds.DefaultPacketSize, 0)); err != nil {
		return nil, err
	}
	up = &upstream{conn: tc, packetSize: int(l.PacketSize), version: min(l.TDSVersion, tds.Version74)}
	if up.packetSize == 0 {
		up.packetSize = tds.DefaultPacketSize
	}
	if err := up.readLoginAnswer(tc, creds); err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return up, nil
}

// prelogin sends the agent's PRELOGIN, asking for encryption, and checks
// that the database answers with TLS on.
func prelogin(raw net.Conn) error {
	pre := &tds.Prelogin{}
	pre.Set(tds.PreloginVersion, tds.VersionBytes(16, 0, 0, 0))
	pre.Set(tds.PreloginEncryption, []byte{tds.EncryptOn})
	pre.Set(tds.PreloginInstance, []byte{0})
	pre.Set(tds.PreloginThreadID, []byte{0, 0, 0, 0})
	pre.Set(tds.PreloginMARS, []byte{0})
	if _, err := raw.Write(tds.AppendPackets(nil, tds.PacketPrelogin, pre.Append(nil), tds.DefaultPacketSize, 0)); err != nil {
		return err
	}
	m, err := tds.NewReader(raw).ReadMessage()
	if err != nil {
		return fmt.Errorf("reading the database's PRELOGIN answer: %w", err)
	}
	if m.Type != tds.PacketReply {
		return fmt.Errorf("the database answered PRELOGIN with a %s message", tds.PacketTypeName(m.Type))
	}
	ans, err := tds.ParsePrelogin(m.Payload)
	if err != nil {
		return fmt.Errorf("the database's PRELOGIN answer: %w", err)
	}
	if !ans.HasEncryption {
		return errors.New("the database's PRELOGIN answer has no ENCRYPTION")
	}
	if ans.Encryption != tds.EncryptOn && ans.Encryption != tds.EncryptReq {
		return fmt.Errorf("the database answered %s to ENCRYPT_ON: the agent logs in only over TLS; give SQL Server a certificate", tds.EncryptionName(ans.Encryption))
	}
	return nil
}

// startTLS runs the TLS handshake inside TDS PRELOGIN packets, then lets
// TLS records pass as they are, as SQL Server does after the handshake.
func startTLS(ctx context.Context, raw net.Conn, db *agent.Database) (*tls.Conn, error) {
	cfg := db.UpstreamTLS(nil)
	// SQL Server expects one TLS record per TDS packet; Go's dynamic
	// record sizing would split them.
	cfg.DynamicRecordSizingDisabled = true
	hc := tds.NewHandshakeConn(raw)
	tc := tls.Client(hc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, tlsError(db, err)
	}
	if err := hc.Flush(); err != nil {
		return nil, err
	}
	hc.Passthrough()
	return tc, nil
}

// upstreamLogin is the client's LOGIN7 as the agent sends it on: the
// agent's credentials instead of the client's, and only the features the
// agent can decode.
func upstreamLogin(l *tds.Login7, db *agent.Database, creds *Credentials) tds.Login7 {
	ul := *l
	ul.ServerName = db.Host
	ul.Password, ul.ChangePassword, ul.SSPI = "", "", nil
	ul.OptionFlags3 &^= tds.FlagChangePassword
	ul.Features = nil
	for _, f := range l.Features {
		// Only features whose data the agent decodes are passed on:
		// column encryption, data classification and the like would
		// make parameters and rows unreadable to the audit.
		if f.ID == tds.FeatureUTF8Support {
			ul.Features = append(ul.Features, f)
		}
	}
	if creds.SSPI != nil {
		ul.UserName = ""
		ul.OptionFlags2 |= tds.FlagIntSecurity
		ul.SSPI = creds.SSPI
	} else {
		ul.UserName, ul.Password = creds.User, creds.Password
		ul.OptionFlags2 &^= tds.FlagIntSecurity
	}
	return ul
}

// readLoginAnswer reads the database's answer to LOGIN7 until its final
// DONE, answering SSPI rounds with creds, and records in up what the
// client will be told (loginResp) and what the session runs with. A login
// without LOGINACK is a *loginFailed.
func (up *upstream) readLoginAnswer(tc *tls.Conn, creds *Credentials) error {
	r := tds.NewReader(tc)
	sc := &tds.Scanner{Version: up.version}
	var (
		acked bool
		fail  *loginFailed
	)
	for done := false; !done; {
		m, err := r.ReadMessage()
		if err != nil {
			return fmt.Errorf("reading the database's login answer: %w", err)
		}
		if m.Type != tds.PacketReply {
			return fmt.Errorf("the database answered LOGIN7 with a %s message", tds.PacketTypeName(m.Type))
		}
		var reply []byte
		err = sc.ScanAll(m.Payload, func(t *tds.Token) error {
			if t.Kind != tds.TokenSSPI {
				up.loginResp = append(up.loginResp, m.Payload[t.Start:t.End]...)
			}
			switch t.Kind {
			case tds.TokenSSPI:
				if creds.Continue == nil {
					return errors.New("the database sent an SSPI token to a SQL login")
				}
				next, err := creds.Continue(t.Data)
				if err != nil {
					return err
				}
				reply = next
			case tds.TokenError:
				if fail == nil {
					fail = &loginFailed{number: t.Number, msg: t.Message}
				}
			case tds.TokenLoginAck:
				acked = true
				up.version, up.progName, up.progVersion = t.TDSVersion, t.ProgName, t.ProgVersion
			case tds.TokenEnvChange:
				up.envChange(t)
			case tds.TokenDone:
				if t.Status&tds.DoneMore == 0 {
					done = true
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if reply != nil {
			if _, err := tc.Write(tds.AppendPackets(nil, tds.PacketSSPI, reply, tds.DefaultPacketSize, 0)); err != nil {
				return err
			}
		}
	}
	if !acked {
		if fail == nil {
			fail = &loginFailed{msg: "no LOGINACK"}
		}
		fail.tokens = up.loginResp
		return fail
	}
	return nil
}

// envChange keeps what a login's ENVCHANGE says of the session: its
// database and the packet size the server agreed to.
func (up *upstream) envChange(t *tds.Token) {
	switch t.EnvType {
	case tds.EnvDatabase:
		up.database = t.EnvNew
	case tds.EnvPacketSize:
		if n, err := strconv.Atoi(t.EnvNew); err == nil && n >= tds.MinPacketSize && n <= tds.MaxPacketSize {
			up.packetSize = n
		}
	}
}
