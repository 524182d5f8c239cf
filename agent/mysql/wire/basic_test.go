package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestLenEncInt(t *testing.T) {
	for _, tc := range []struct {
		v    uint64
		wire []byte
	}{
		{0, []byte{0}},
		{250, []byte{250}},
		{251, []byte{0xfc, 251, 0}},
		{0xffff, []byte{0xfc, 0xff, 0xff}},
		{0x10000, []byte{0xfd, 0, 0, 1}},
		{0xffffff, []byte{0xfd, 0xff, 0xff, 0xff}},
		{0x1000000, []byte{0xfe, 0, 0, 0, 1, 0, 0, 0, 0}},
		{1<<64 - 1, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		got := AppendLenEncInt(nil, tc.v)
		if !bytes.Equal(got, tc.wire) || LenEncIntSize(tc.v) != len(tc.wire) {
			t.Errorf("encode %d: % x, want % x", tc.v, got, tc.wire)
		}
		v, null, n, err := ReadLenEncInt(append(tc.wire, 0x99))
		if err != nil || null || n != len(tc.wire) || v != tc.v {
			t.Errorf("decode % x: %d %v %d %v", tc.wire, v, null, n, err)
		}
	}
	if _, null, n, err := ReadLenEncInt([]byte{0xfb}); !null || n != 1 || err != nil {
		t.Errorf("0xfb is NULL: %v %d %v", null, n, err)
	}
	for _, bad := range [][]byte{nil, {0xff}, {0xfc, 1}, {0xfd, 1, 2}, {0xfe, 1, 2, 3, 4, 5, 6, 7}} {
		if _, _, _, err := ReadLenEncInt(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("% x: %v, want ErrMalformed", bad, err)
		}
	}
}

func TestStrings(t *testing.T) {
	b := AppendLenEncString(nil, "abc")
	s, null, n, err := ReadLenEncString(b)
	if string(s) != "abc" || null || n != 4 || err != nil {
		t.Errorf("lenenc string: %q %v %d %v", s, null, n, err)
	}
	if _, _, _, err := ReadLenEncString([]byte{5, 'a'}); !errors.Is(err, ErrMalformed) {
		t.Errorf("short lenenc string: %v", err)
	}
	// A huge declared length must not overflow the bounds check.
	huge := []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'a'}
	if _, _, _, err := ReadLenEncString(huge); !errors.Is(err, ErrMalformed) {
		t.Errorf("huge lenenc string: %v", err)
	}
	nb := AppendNulString(nil, "root")
	s, n, err = ReadNulString(append(nb, 'x'))
	if string(s) != "root" || n != 5 || err != nil {
		t.Errorf("NUL string: %q %d %v", s, n, err)
	}
	if _, _, err := ReadNulString([]byte("abc")); !errors.Is(err, ErrMalformed) {
		t.Errorf("NUL string without NUL: %v", err)
	}
}

func TestCapabilityNames(t *testing.T) {
	c := ClientProtocol41 | ClientSSL | MariaDBClientProgress
	if got := c.String(); got != "CLIENT_PROTOCOL_41|CLIENT_SSL|MARIADB_CLIENT_PROGRESS" {
		t.Errorf("String() = %q", got)
	}
	if got := Capabilities(1 << 40).String(); got != "CAPABILITY_BIT_40" {
		t.Errorf("unknown bit: %q", got)
	}
	if got := (ServerStatusAutocommit | ServerMoreResultsExists).String(); got != "SERVER_STATUS_AUTOCOMMIT|SERVER_MORE_RESULTS_EXISTS" {
		t.Errorf("status String() = %q", got)
	}
	if ComStmtExecute.String() != "COM_STMT_EXECUTE" || CommandType(0x42).String() != "COM_0x42" || ComMulti.String() != "COM_MULTI" {
		t.Errorf("command names")
	}
	if TypeNewDecimal.String() != "NEWDECIMAL" || FieldType(0x30).String() != "TYPE_0x30" {
		t.Errorf("type names")
	}
}
