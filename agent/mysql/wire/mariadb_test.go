package wire

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// A real MariaDB started once for the package's tests, on a free loopback
// port with its socket and data in a temporary directory.

var (
	mariaOnce sync.Once
	mariaAddr string
	mariaErr  error
	mariaDir  string
	mariaCmd  *exec.Cmd
)

func TestMain(m *testing.M) {
	code := m.Run()
	if mariaCmd != nil && mariaCmd.Process != nil {
		_ = mariaCmd.Process.Kill()
		_ = mariaCmd.Wait()
	}
	if mariaDir != "" {
		_ = os.RemoveAll(mariaDir)
	}
	os.Exit(code)
}

func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH, /usr/sbin or /usr/bin: install the mariadb-server package (make deps)", name)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startMariaDB returns the address of the package's MariaDB, starting it on
// first use. The root user has no password (over TCP from localhost).
func startMariaDB(t testing.TB) string {
	t.Helper()
	mariaOnce.Do(func() { mariaAddr, mariaErr = launchMariaDB() })
	if mariaErr != nil {
		t.Fatalf("starting MariaDB: %v", mariaErr)
	}
	return mariaAddr
}

func launchMariaDB() (string, error) {
	server, err := findBinary("mariadbd")
	if err != nil {
		return "", err
	}
	install, err := findBinary("mariadb-install-db")
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "wire-mariadb-")
	if err != nil {
		return "", err
	}
	mariaDir = dir
	data := filepath.Join(dir, "data")
	out, err := exec.Command(install, "--no-defaults", "--auth-root-authentication-method=normal",
		"--datadir="+data, "--user=root", "--skip-test-db").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	logFile := filepath.Join(dir, "error.log")
	cmd := exec.Command(server, "--no-defaults", "--datadir="+data, "--user=root",
		"--socket="+filepath.Join(dir, "mysqld.sock"), "--port="+strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--pid-file="+filepath.Join(dir, "mysqld.pid"),
		"--log-error="+logFile, "--innodb-buffer-pool-size=16M", "--skip-log-bin",
		"--general-log=0", "--max-allowed-packet=64M")
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("mariadbd: %v", err)
	}
	mariaCmd = cmd
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	logText, _ := os.ReadFile(logFile)
	return "", fmt.Errorf("mariadbd did not listen on %s within 60s; log:\n%s", addr, logText)
}

// testClient is a minimal MySQL client driven by this package's codec.
type testClient struct {
	t     testing.TB
	conn  net.Conn
	r     *Reader
	w     *Writer
	caps  Capabilities
	hs    HandshakeV10
	stmts *Statements
	dec   *ResponseDecoder
	// capture, when set, receives every payload: 'c' client, 's' server.
	capture func(dir byte, payload []byte)
}

// Capability sets the tests run with: what libmariadb asks for, the same
// without MariaDB extensions and without DEPRECATE_EOF (the classic MySQL
// 5.x flow), and the MariaDB extended capabilities on.
var (
	baseCaps = ClientLongPassword | ClientFoundRows | ClientLongFlag | ClientConnectWithDB |
		ClientProtocol41 | ClientTransactions | ClientSecureConnection | ClientMultiStatements |
		ClientMultiResults | ClientPSMultiResults | ClientPluginAuth | ClientConnectAttrs |
		ClientPluginAuthLenEncClientData | ClientSessionTrack
	capsClassic  = baseCaps
	capsDeprEOF  = baseCaps | ClientDeprecateEOF
	capsMariaExt = (baseCaps | ClientDeprecateEOF | MariaDBClientProgress | MariaDBClientExtendedMetadata |
		MariaDBClientCacheMetadata | MariaDBClientStmtBulkOperations) &^ ClientMySQL
)

func dialMariaDB(t testing.TB, addr, user, password, db string, want Capabilities) (*testClient, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &testClient{t: t, conn: conn, r: NewReader(conn, 0), w: NewWriter(conn), stmts: NewStatements(), capture: testCaptureHook}
	t.Cleanup(func() { conn.Close() })
	if err := c.handshake(user, password, db, want); err != nil {
		return nil, err
	}
	c.dec = NewResponseDecoder(c.caps)
	return c, nil
}

func (c *testClient) read() ([]byte, error) {
	p, err := c.r.ReadPacket()
	if err != nil {
		return nil, err
	}
	c.w.SetSeq(c.r.Seq())
	if c.capture != nil {
		c.capture('s', p)
	}
	return p, nil
}

func (c *testClient) write(p []byte) error {
	if c.capture != nil {
		c.capture('c', p)
	}
	if err := c.w.WritePacket(p); err != nil {
		return err
	}
	c.r.SetSeq(c.w.Seq())
	return nil
}

func (c *testClient) handshake(user, password, db string, want Capabilities) error {
	p, err := c.read()
	if err != nil {
		return err
	}
	if err := c.hs.Decode(p); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	c.caps = want & c.hs.Capabilities
	if want&ClientMySQL == 0 {
		c.caps &^= ClientMySQL
	}
	if db != "" {
		c.caps |= ClientConnectWithDB & c.hs.Capabilities
	} else {
		c.caps &^= ClientConnectWithDB
	}
	resp := HandshakeResponse41{
		Capabilities: c.caps, MaxPacketSize: 1 << 24, CharacterSet: 45, // utf8mb4_general_ci
		Username: user, Database: db, AuthPlugin: c.hs.AuthPluginName,
		AuthResponse: authResponse(c.hs.AuthPluginName, c.hs.AuthPluginData, password),
		Attributes:   []Attribute{{"_client_name", "tollgate-wire-test"}, {"program_name", "wire.test"}},
	}
	if err := c.write(resp.Encode(nil)); err != nil {
		return err
	}
	for {
		p, err := c.read()
		if err != nil {
			return err
		}
		switch p[0] {
		case OKHeader:
			return nil
		case ErrHeader:
			var e ErrPacket
			if err := e.Decode(p); err != nil {
				return err
			}
			return &e
		case AuthSwitchHeader:
			var sw AuthSwitchRequest
			if err := sw.Decode(p); err != nil {
				return err
			}
			if err := c.write(authResponse(sw.PluginName, sw.PluginData, password)); err != nil {
				return err
			}
		case AuthMoreDataHeader:
			var more AuthMoreData
			if err := more.Decode(p); err != nil {
				return err
			}
			if len(more.Data) == 1 && more.Data[0] == CachingSHA2FastAuthSuccess {
				continue
			}
			return fmt.Errorf("server asks for more auth data % x, not supported by the test client", more.Data)
		default:
			return fmt.Errorf("unexpected auth packet % x", p)
		}
	}
}

func authResponse(plugin string, data []byte, password string) []byte {
	switch plugin {
	case PluginEd25519:
		return ScrambleEd25519(data, password)
	case PluginCachingSHA2:
		return ScrambleCachingSHA2(data, password)
	default:
		return ScrambleNativePassword(data, password)
	}
}

// do sends cmd and reads the whole response, returning its summary and the
// server's payloads (copied).
func (c *testClient) do(cmd Command) (*Response, [][]byte, error) {
	payload, err := cmd.Encode(nil, c.caps)
	if err != nil {
		return nil, nil, err
	}
	// What we send must decode back to the same command.
	back, err := DecodeCommand(payload, c.caps, c.stmts)
	if err != nil {
		return nil, nil, fmt.Errorf("decoding our own %s: %w", cmd.Type(), err)
	}
	c.w.SetSeq(0)
	if err := c.write(payload); err != nil {
		return nil, nil, err
	}
	c.stmts.Apply(back)
	var packets [][]byte
	if !c.dec.Begin(cmd.Type()) {
		resp := c.dec.Response()
		return &resp, nil, nil
	}
	for {
		p, err := c.read()
		if err != nil {
			return nil, packets, err
		}
		packets = append(packets, bytes.Clone(p))
		done, err := c.dec.Feed(p)
		if err != nil {
			return nil, packets, err
		}
		if done {
			break
		}
	}
	resp := c.dec.Response()
	if cmd.Type() == ComStmtPrepare && !resp.Failed {
		c.stmts.Prepared(&resp.Prepare)
	}
	return &resp, packets, nil
}

func (c *testClient) mustDo(cmd Command) (*Response, [][]byte) {
	c.t.Helper()
	resp, packets, err := c.do(cmd)
	if err != nil {
		c.t.Fatalf("%s: %v", cmd.Type(), err)
	}
	if resp.Failed {
		c.t.Fatalf("%s failed: %d (%s) %s", cmd.Type(), resp.ErrorCode, resp.SQLState, resp.ErrorMessage)
	}
	return resp, packets
}

func (c *testClient) exec(sql string) *Response {
	c.t.Helper()
	r, _ := c.mustDo(&Query{Query: sql})
	return r
}

// testCaptureHook is installed as the capture of clients dialled while it
// is set (tests run sequentially).
var testCaptureHook func(dir byte, payload []byte)
