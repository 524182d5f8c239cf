package mysql

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// scriptedServer plays a database's side of the connection phase: its
// greeting names plugin; after TLS and the agent's handshake response
// (which must name respPlugin), answer runs the rest of the exchange and
// reports what it saw wrong.
func scriptedServer(t *testing.T, plugin, respPlugin string, answer func(r *wire.Reader, w *wire.Writer, hr *wire.HandshakeResponse41, scramble []byte) error) (addr string, cfg *tls.Config, errs chan error) {
	t.Helper()
	ca := harness.NewCA(t, "scripted db CA")
	pair := ca.IssueServer(t, "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	errs = make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		defer c.Close()
		errs <- func() error {
			scramble := []byte("abcdefghij0123456789")
			hs := wire.HandshakeV10{ProtocolVersion: 10, ServerVersion: "8.0.36-scripted", ConnectionID: 7, AuthPluginData: scramble,
				Capabilities: serverCaps | wire.ClientSSL, CharacterSet: 45, Status: wire.ServerStatusAutocommit, AuthPluginName: plugin}
			w := wire.NewWriter(c)
			if err := w.WritePacket(hs.Encode(nil)); err != nil {
				return err
			}
			r := wire.NewReader(c, 0)
			r.SetSeq(1)
			p, err := r.ReadPacket()
			if err != nil || !wire.IsSSLRequest(p) {
				return fmt.Errorf("no SSLRequest: %v", err)
			}
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pair.TLSCertificate()}, ClientAuth: tls.RequireAnyClientCert})
			if err := tc.Handshake(); err != nil {
				return err
			}
			if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "app" {
				return fmt.Errorf("client certificate for %q", cn)
			}
			r.Reset(tc)
			w.Reset(tc)
			p, err = r.ReadPacket()
			if err != nil {
				return err
			}
			var hr wire.HandshakeResponse41
			if err := hr.Decode(p); err != nil {
				return err
			}
			if hr.Username != "app" || hr.Database != "test" || hr.AuthPlugin != respPlugin {
				return fmt.Errorf("handshake response %+v", hr)
			}
			w.SetSeq(r.Seq())
			return answer(r, w, &hr, scramble)
		}()
	}()
	return ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}, errs
}

func TestUpstreamAuthentication(t *testing.T) {
	ok := (&wire.OKPacket{Status: wire.ServerStatusAutocommit}).Encode(nil, serverCaps)
	reply := func(w *wire.Writer, r *wire.Reader, p []byte) ([]byte, error) {
		if err := w.WritePacket(p); err != nil {
			return nil, err
		}
		r.SetSeq(w.Seq())
		resp, err := r.ReadPacket()
		w.SetSeq(r.Seq())
		return resp, err
	}
	const token = "rds-proxy.example:3306/?Action=connect&DBUser=app&X-Amz-Signature=abc"
	cases := []struct {
		name, plugin string
		answer       func(r *wire.Reader, w *wire.Writer, hr *wire.HandshakeResponse41, scramble []byte) error
		wantErr      string
		token        string
	}{
		{"native, empty password", wire.PluginNativePassword, func(r *wire.Reader, w *wire.Writer, hr *wire.HandshakeResponse41, _ []byte) error {
			if len(hr.AuthResponse) != 0 {
				return fmt.Errorf("native auth response %x for the empty password", hr.AuthResponse)
			}
			return w.WritePacket(ok)
		}, "", ""},
		{"caching_sha2 full authentication", wire.PluginCachingSHA2, func(r *wire.Reader, w *wire.Writer, hr *wire.HandshakeResponse41, _ []byte) error {
			if len(hr.AuthResponse) != 0 {
				return fmt.Errorf("caching_sha2 response %x", hr.AuthResponse)
			}
			resp, err := reply(w, r, (&wire.AuthMoreData{Data: []byte{wire.CachingSHA2PerformFullAuth}}).Encode(nil))
			if err != nil || !bytes.Equal(resp, []byte{0}) {
				return fmt.Errorf("full authentication answer %x %v", resp, err)
			}
			return w.WritePacket(ok)
		}, "", ""},
		{"caching_sha2 fast path", wire.PluginCachingSHA2, func(r *wire.Reader, w *wire.Writer, _ *wire.HandshakeResponse41, _ []byte) error {
			if err := w.WritePacket((&wire.AuthMoreData{Data: []byte{wire.CachingSHA2FastAuthSuccess}}).Encode(nil)); err != nil {
				return err
			}
			return w.WritePacket(ok)
		}, "", ""},
		{"switch to client_ed25519", wire.PluginNativePassword, func(r *wire.Reader, w *wire.Writer, _ *wire.HandshakeResponse41, _ []byte) error {
			nonce := bytes.Repeat([]byte{9}, 32)
			resp, err := reply(w, r, (&wire.AuthSwitchRequest{PluginName: wire.PluginEd25519, PluginData: nonce}).Encode(nil))
			if err != nil || !ed25519.Verify(wire.Ed25519PublicKey(""), nonce, resp) {
				return fmt.Errorf("ed25519 signature %x does not verify: %v", resp, err)
			}
			return w.WritePacket(ok)
		}, "", ""},
		{"switch to an unsupported plugin", wire.PluginNativePassword, func(r *wire.Reader, w *wire.Writer, _ *wire.HandshakeResponse41, _ []byte) error {
			return w.WritePacket((&wire.AuthSwitchRequest{PluginName: "dialog", PluginData: []byte("x")}).Encode(nil))
		}, "REQUIRE X509", ""},
		{"refused", wire.PluginNativePassword, func(r *wire.Reader, w *wire.Writer, _ *wire.HandshakeResponse41, _ []byte) error {
			return w.WritePacket((&wire.ErrPacket{Code: 1045, SQLState: "28000", Message: "Access denied for user 'app'"}).Encode(nil, serverCaps))
		}, "1045", ""},
		// RDS Proxy with IAM authentication: the token is the password of
		// mysql_clear_password, offered at once and given again when the
		// proxy switches to that plugin.
		{"IAM token, offered at once", wire.PluginNativePassword, func(r *wire.Reader, w *wire.Writer, hr *wire.HandshakeResponse41, _ []byte) error {
			if string(hr.AuthResponse) != token+"\x00" {
				return fmt.Errorf("clear password %q, want the token", hr.AuthResponse)
			}
			return w.WritePacket(ok)
		}, "", token},
		{"IAM token, after a switch", wire.PluginNativePassword, func(r *wire.Reader, w *wire.Writer, _ *wire.HandshakeResponse41, _ []byte) error {
			resp, err := reply(w, r, (&wire.AuthSwitchRequest{PluginName: wire.PluginClearPassword}).Encode(nil))
			if err != nil || string(resp) != token+"\x00" {
				return fmt.Errorf("clear password after the switch %q: %v", resp, err)
			}
			return w.WritePacket(ok)
		}, "", token},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			respPlugin := c.plugin
			if c.token != "" {
				respPlugin = wire.PluginClearPassword
			}
			addr, cfg, errs := scriptedServer(t, c.plugin, respPlugin, c.answer)
			cfg.Certificates = []tls.Certificate{harness.NewCA(t, "db-client").IssueClient(t, "app").TLSCertificate()}
			resp := &wire.HandshakeResponse41{MaxPacketSize: 1 << 24, CharacterSet: 45}
			up, err := dialUpstream(context.Background(), addr, cfg, 5*time.Second, 5*time.Second, resp,
				serverCaps&^wire.ClientConnectAttrs, "app", "test", c.token)
			if serr := <-errs; serr != nil && c.wantErr == "" {
				t.Fatalf("server side: %v", serr)
			}
			if c.wantErr != "" {
				var ep *wire.ErrPacket
				if err == nil || !strings.Contains(err.Error(), c.wantErr) && !(errors.As(err, &ep) && ep.Code == 1045) {
					t.Fatalf("want an error with %q, got %v", c.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer up.conn.Close()
			if up.greeting.ConnectionID != 7 || up.ok[0] != wire.OKHeader {
				t.Fatalf("upstream %+v", up)
			}
		})
	}
}

// A database behind RDS Proxy gets a fresh IAM token from Options.Password
// for each upstream connection; other databases never ask for one.
func TestConnectBehindRDSProxyUsesIAMToken(t *testing.T) {
	const token = "proxy.example:3306/?Action=connect&DBUser=app&X-Amz-Signature=def"
	ok := (&wire.OKPacket{Status: wire.ServerStatusAutocommit}).Encode(nil, serverCaps)
	for _, proxied := range []bool{true, false} {
		t.Run(fmt.Sprint("rds_proxy=", proxied), func(t *testing.T) {
			want := wire.PluginNativePassword
			if proxied {
				want = wire.PluginClearPassword
			}
			addr, _, errs := scriptedServer(t, wire.PluginNativePassword, want, func(r *wire.Reader, w *wire.Writer, hr *wire.HandshakeResponse41, _ []byte) error {
				if proxied && string(hr.AuthResponse) != token+"\x00" {
					return fmt.Errorf("auth response %q, want the token", hr.AuthResponse)
				}
				return w.WritePacket(ok)
			})
			db, err := agent.NewDatabase(config.Database{Name: "my1", Protocol: "mysql", URI: addr,
				TLS: config.DatabaseTLS{Mode: "insecure"}, AWS: config.AWS{Region: "eu-west-1", RDSProxy: proxied}})
			if err != nil {
				t.Fatal(err)
			}
			asked := 0
			e := New(Options{Password: func(_ context.Context, d *agent.Database, dbUser string) (string, error) {
				asked++
				if d != db || dbUser != "app" {
					return "", fmt.Errorf("token asked for %s/%s", d.Config.Name, dbUser)
				}
				return token, nil
			}})
			clientCert := harness.NewCA(t, "db-client").IssueClient(t, "app").TLSCertificate()
			c := &agent.ClientConn{Env: &agent.Env{ClientCert: func(context.Context, agent.DatabaseInfo, string) (*tls.Certificate, error) {
				return &clientCert, nil
			}}}
			up, err := e.connect(context.Background(), c, db, &wire.HandshakeResponse41{MaxPacketSize: 1 << 24, CharacterSet: 45},
				serverCaps&^wire.ClientConnectAttrs, "app", "test")
			if serr := <-errs; serr != nil {
				t.Fatalf("server side: %v", serr)
			}
			if err != nil {
				t.Fatal(err)
			}
			up.conn.Close()
			if wantAsked := map[bool]int{true: 1, false: 0}[proxied]; asked != wantAsked {
				t.Fatalf("token asked %d times, want %d", asked, wantAsked)
			}
		})
	}
}
