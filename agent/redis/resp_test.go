package redis

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		args []string
		size int
		need int
		err  string
	}{
		{in: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", args: []string{"GET", "k"}, size: 20},
		{in: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1", args: []string{"GET", "k"}, size: 20},
		{in: "*2\r\n$3\r\nGET\r\n$10\r\nk", need: 30},
		{in: "*2\r\n$3\r", need: 8},
		{in: "PING\r\n", args: []string{"PING"}, size: 6},
		{in: "set k \"a b\\x41\\n\" 'c\\'d'\n", args: []string{"set", "k", "a bA\n", "c'd"}, size: 25},
		{in: "\r\n", size: 2},
		{in: "PIN", need: 4},
		{in: "*0\r\n", err: "invalid multibulk length 0"},
		{in: "*x\r\n", err: "invalid multibulk length"},
		{in: "*1\r\n:1\r\n", err: "expected '$', got ':'"},
		{in: "*1\r\n$-1\r\n", err: "invalid bulk length -1"},
		{in: "*1\r\n$1\r\nab\r\n", err: "not followed by CRLF"},
		{in: "set \"a\n", err: "unbalanced quotes"},
		{in: "set \"a\"b\n", err: "unbalanced quotes"},
		{in: "*1\r\n$+1\r\na\r\n", err: "invalid bulk length"},
	} {
		cmd, size, need, err := ParseCommand([]byte(tc.in), Limits{})
		if tc.err != "" {
			var pe *ProtocolError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || size != tc.size || need != tc.need {
			t.Errorf("%q: size %d need %d err %v; want %d %d", tc.in, size, need, err, tc.size, tc.need)
			continue
		}
		var got []string
		for _, a := range cmd.Args {
			got = append(got, string(a))
		}
		if strings.Join(got, "|") != strings.Join(tc.args, "|") {
			t.Errorf("%q: args %q, want %q", tc.in, got, tc.args)
		}
	}
	if _, _, _, err := ParseCommand([]byte(strings.Repeat("a", 100)), Limits{MaxInline: 10}); err == nil || !strings.Contains(err.Error(), "too big inline request") {
		t.Errorf("long inline line: %v", err)
	}
	if _, _, _, err := ParseCommand([]byte("*1\r\n$100\r\n"), Limits{MaxCommand: 50}); err == nil || !strings.Contains(err.Error(), "over the agent's limit") {
		t.Errorf("large command: %v", err)
	}
}

// TestReplyScanner feeds replies split at every byte and checks each
// reply is found once, whole, with its summary.
func TestReplyScanner(t *testing.T) {
	stream := "+OK\r\n" +
		"-ERR unknown command\r\n" +
		":42\r\n" +
		"$5\r\nhello\r\n" +
		"$-1\r\n" +
		"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n" +
		"*-1\r\n" +
		"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n" +
		">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n" +
		"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n" +
		"_\r\n#t\r\n,1.5\r\n(123\r\n!5\r\nOOPS!\r\n=7\r\ntxt:abc\r\n~2\r\n:1\r\n*1\r\n:2\r\n"
	want := []string{"+ 0 ", "- 0 ERR unknown command", ": 0 ", "$ 0 ", "$ -1 ", "* 3 message,ch,abc", "* -1 ",
		"% 2 server,redis,proto", "> 3 subscribe,ch,1", "$ 0 ", "_ 0 ", "# 0 ", ", 0 ", "( 0 ", "! 0 OOPS!", "= 0 ", "~ 2 1"}
	for step := 1; step <= len(stream); step++ {
		var s ReplyScanner
		var got []string
		total := 0
		for i := 0; i < len(stream); i += step {
			chunk := []byte(stream[i:min(len(stream), i+step)])
			err := s.Feed(chunk, func(start, end int, r *Reply) {
				got = append(got, string(r.Type)+" "+strconv.FormatInt(r.Elems, 10)+" "+r.Err+strings.Join(r.Head, ","))
				total += int(r.Bytes)
			})
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") || total != len(stream) || s.Pending() {
			t.Fatalf("step %d: got\n%s\nbytes %d of %d", step, strings.Join(got, "\n"), total, len(stream))
		}
	}
	for _, bad := range []string{"?x\r\n", "$x\r\n", "+OK\n", "$2\r\nabcd", "*-2\r\n"} {
		var s ReplyScanner
		if err := s.Feed([]byte(bad), func(int, int, *Reply) {}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestRender(t *testing.T) {
	args := [][]byte{[]byte("AUTH"), []byte("app"), []byte("s3cret")}
	got, red := render(args, secretArgs("AUTH", args), 100)
	if got != "AUTH app <redacted>" || !red {
		t.Errorf("AUTH: %q %v", got, red)
	}
	args = [][]byte{[]byte("HELLO"), []byte("3"), []byte("AUTH"), []byte("app"), []byte("pw"), []byte("SETNAME"), []byte("x")}
	if got, _ := render(args, secretArgs("HELLO", args), 100); got != "HELLO 3 AUTH app <redacted> SETNAME x" {
		t.Errorf("HELLO: %q", got)
	}
	args = [][]byte{[]byte("SET"), []byte("a key"), []byte("\x00\xffé\"\n"), []byte(strings.Repeat("v", 30))}
	if got, _ := render(args, nil, 10); got != `SET "a key" "\x00\xffé\"\n" vvvvvvvvvv...(30 bytes)` {
		t.Errorf("SET: %q", got)
	}
	args = [][]byte{[]byte("ACL"), []byte("SETUSER"), []byte("bob"), []byte("on"), []byte(">pw"), []byte("~*")}
	if got, _ := render(args, secretArgs("ACL", args), 100); got != "ACL SETUSER bob on <redacted> ~*" {
		t.Errorf("ACL: %q", got)
	}
}
