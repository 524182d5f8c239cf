package wire

import (
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// relay sits between a real client and the server the way the agent's
// engine will: it decodes every client command and follows every response,
// forwarding packets unchanged (sequence ids included).
func relay(client, server net.Conn) (cmds []Command, resps []Response, caps Capabilities, err error) {
	cr, cw := NewReader(client, 0), NewWriter(client)
	sr, sw := NewReader(server, 0), NewWriter(server)
	// pass copies one packet from r to w, with r's sequence number, and
	// makes the reader on w's side (back) expect the answer's.
	pass := func(r *Reader, w *Writer, back *Reader) ([]byte, error) {
		p, err := r.ReadPacket()
		if err != nil {
			return nil, err
		}
		w.SetSeq(r.Seq() - 1)
		if err := w.WritePacket(p); err != nil {
			return nil, err
		}
		back.SetSeq(w.Seq())
		return p, nil
	}
	fromServer := func() ([]byte, error) { return pass(sr, cw, cr) }
	fromClient := func() ([]byte, error) { return pass(cr, sw, sr) }
	p, err := fromServer()
	if err != nil {
		return nil, nil, 0, err
	}
	var hs HandshakeV10
	if err := hs.Decode(p); err != nil {
		return nil, nil, 0, err
	}
	if p, err = fromClient(); err != nil {
		return nil, nil, 0, err
	}
	var hr HandshakeResponse41
	if err := hr.Decode(p); err != nil {
		return nil, nil, 0, err
	}
	caps = hr.Capabilities & hs.Capabilities
	for {
		p, err := fromServer()
		if err != nil {
			return nil, nil, caps, err
		}
		if p[0] == OKHeader {
			break
		}
		if p[0] == ErrHeader {
			var e ErrPacket
			_ = e.Decode(p)
			return nil, nil, caps, &e
		}
		if _, err := fromClient(); err != nil {
			return nil, nil, caps, err
		}
	}
	stmts := NewStatements()
	dec := NewResponseDecoder(caps)
	for {
		cr.SetSeq(0)
		p, err := fromClient()
		if err == io.EOF {
			return cmds, resps, caps, nil
		}
		if err != nil {
			return cmds, resps, caps, err
		}
		cmd, err := DecodeCommand(p, caps, stmts)
		if err != nil {
			return cmds, resps, caps, err
		}
		cmds = append(cmds, cmd)
		stmts.Apply(cmd)
		if !dec.Begin(cmd.Type()) {
			if cmd.Type() == ComQuit {
				return cmds, resps, caps, nil
			}
			continue
		}
		for done := false; !done; {
			p, err := fromServer()
			if err != nil {
				return cmds, resps, caps, err
			}
			if done, err = dec.Feed(p); err != nil {
				return cmds, resps, caps, err
			}
		}
		r := dec.Response()
		if cmd.Type() == ComStmtPrepare && !r.Failed {
			stmts.Prepared(&r.Prepare)
		}
		resps = append(resps, r)
	}
}

// The mariadb command-line client through a relay built on the codec: its
// handshake, queries and the server's answers all decode.
func TestMariaDBRelayRealClient(t *testing.T) {
	addr := startMariaDB(t)
	setupUsers(t, addr)
	cli, err := findBinary("mariadb")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		cmds  []Command
		resps []Response
		caps  Capabilities
		err   error
	}
	done := make(chan result, 1)
	go func() {
		client, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer client.Close()
		server, err := net.Dial("tcp", addr)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer server.Close()
		cmds, resps, caps, err := relay(client, server)
		done <- result{cmds, resps, caps, err}
	}()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	script := "SELECT 1; CREATE TABLE relay_t (a INT, b VARCHAR(9)); INSERT INTO relay_t VALUES (1, 'x'), (2, NULL); " +
		"SELECT * FROM relay_t; SELECT nope FROM relay_t"
	out, cliErr := exec.Command(cli, "--no-defaults", "--protocol=TCP", "-h127.0.0.1", "-P"+port, "-u"+nativeUser,
		"-p"+userPass, "wiretest", "-e", script).CombinedOutput()
	res := <-done
	if res.err != nil {
		t.Fatalf("relay: %v (client output: %s)", res.err, out)
	}
	if cliErr == nil || !strings.Contains(string(out), "1054") {
		t.Errorf("the client should fail on the last statement with 1054: %v %s", cliErr, out)
	}
	t.Logf("negotiated with the mariadb client: %s", res.caps)
	var queries []string
	for _, c := range res.cmds {
		if q, ok := c.(*Query); ok {
			queries = append(queries, q.Query)
		}
	}
	want := []string{"SELECT 1", "CREATE TABLE relay_t (a INT, b VARCHAR(9))", "INSERT INTO relay_t VALUES (1, 'x'), (2, NULL)",
		"SELECT * FROM relay_t", "SELECT nope FROM relay_t"}
	joined := strings.Join(queries, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("query %q not decoded; decoded: %q", w, queries)
		}
	}
	byQuery := map[string]Response{}
	for i, c := range res.cmds {
		if q, ok := c.(*Query); ok && i < len(res.resps) {
			byQuery[strings.TrimSpace(q.Query)] = res.resps[i]
		}
	}
	if r := byQuery[want[2]]; r.AffectedRows != 2 || r.Failed {
		t.Errorf("insert: %+v", r)
	}
	if r := byQuery[want[3]]; r.Rows != 2 || r.Columns != 2 {
		t.Errorf("select: %+v", r)
	}
	if r := byQuery[want[4]]; !r.Failed || r.ErrorCode != 1054 || r.SQLState != "42S22" {
		t.Errorf("error: %+v", r)
	}
}
