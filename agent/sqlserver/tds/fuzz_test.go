package tds

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// seedMessages are valid client messages of every kind, framed.
func seedMessages(t testing.TB) [][]byte {
	pre := &Prelogin{}
	pre.Set(PreloginVersion, VersionBytes(16, 0, 0, 0))
	pre.Set(PreloginEncryption, []byte{EncryptOff})
	pre.Set(PreloginThreadID, []byte{0, 0, 0, 1})
	login, _ := (&Login7{TDSVersion: Version74, PacketSize: 4096, UserName: "alice", Password: "pw", Database: "app",
		Features: []Feature{{ID: FeatureUTF8Support, Data: []byte{1}}}}).Append(nil)
	var params []ParamValue
	for _, c := range typeCases {
		params = append(params, ParamValue{Name: "@p", Raw: c.raw})
	}
	rpc, err := AppendRPC(nil, 0, Call{ProcID: ProcExecuteSQL, Params: params}, Call{ProcName: "sp_prepexec"})
	if err != nil {
		t.Fatal(err)
	}
	tm := cat(AppendAllHeaders(nil, 1, 1), le(TMBeginXact), []byte{2}, appendBVarchar(nil, "t"))
	return [][]byte{
		AppendPackets(nil, PacketPrelogin, pre.Append(nil), 512, 0),
		AppendPackets(nil, PacketLogin7, login, 512, 0),
		AppendPackets(nil, PacketSQLBatch, AppendSQLBatch(nil, 0, "select 1; select N'é'"), 512, 0),
		AppendPackets(nil, PacketRPC, rpc, 512, 0),
		AppendPackets(nil, PacketTransMgr, tm, 512, 0),
		AppendPackets(nil, PacketAttention, nil, 512, 0),
	}
}

// decodeAll runs every client decoder on a message; none may panic.
func decodeAll(m Message) {
	switch m.Type {
	case PacketPrelogin:
		if p, err := ParsePrelogin(m.Payload); err == nil {
			q, err := ParsePrelogin(p.Append(nil))
			if err != nil || !reflect.DeepEqual(p.Options, q.Options) {
				panic("PRELOGIN does not round trip")
			}
		}
	case PacketLogin7:
		if l, err := ParseLogin7(m.Payload, 0); err == nil && l.TDSVersion >= Version72 {
			b, err := l.Append(nil)
			if err != nil {
				return
			}
			l2, err := ParseLogin7(b, 0)
			if err != nil {
				panic("LOGIN7 re-encoding does not parse: " + err.Error())
			}
			if l2.UserName != l.UserName || l2.Password != l.Password || l2.Database != l.Database || !bytes.Equal(l2.SSPI, l.SSPI) {
				panic("LOGIN7 does not round trip")
			}
		}
	case PacketSQLBatch:
		_, _, _ = ParseSQLBatch(m.Payload, Version74)
	case PacketRPC:
		_, _, _ = ParseRPC(m.Payload, Version74, 64)
	case PacketTransMgr:
		_, _, _ = ParseTMRequest(m.Payload, Version74)
	case PacketBulkLoad:
		_ = (&Scanner{}).ScanAll(m.Payload, func(*Token) error { return nil })
	}
}

// FuzzClientStream feeds arbitrary bytes to the packet reader and every
// client decoder: errors are fine, panics and inconsistent messages are
// not.
func FuzzClientStream(f *testing.F) {
	for _, m := range seedMessages(f) {
		f.Add(m)
	}
	f.Add([]byte{0x12, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		r.MaxMessage = 1 << 20
		for {
			m, err := r.ReadMessage()
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && !errors.As(err, &pe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(m.Raw) != len(m.Payload)+HeaderLen*m.Packets {
				t.Fatalf("raw %d bytes for a %d-byte payload in %d packets", len(m.Raw), len(m.Payload), m.Packets)
			}
			decodeAll(m)
		}
	})
}

// FuzzRPC decodes arbitrary RPC payloads after valid ALL_HEADERS.
func FuzzRPC(f *testing.F) {
	for _, c := range typeCases {
		b, _ := AppendRPC(nil, 0, Call{ProcID: ProcExecuteSQL, Params: []ParamValue{{Name: "@p", Raw: c.raw}}})
		f.Add(b[22:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, calls, err := ParseRPC(append(AppendAllHeaders(nil, 0, 1), b...), Version74, 32)
		if err == nil && len(calls) == 0 {
			t.Fatal("no error and no call")
		}
		for _, c := range calls {
			for _, p := range c.Params {
				// Text and binary renderings are cut at the limit; the
				// others (numbers, dates) are short by nature.
				if len(p.Value.Text) > 64 {
					t.Fatalf("%s value of %d bytes past the 32-byte limit", p.Type.String(), len(p.Value.Text))
				}
			}
		}
	})
}

// FuzzScanner checks that the token scanner neither panics nor depends on
// where packets cut the stream: scanning in two pieces gives what scanning
// whole gives.
func FuzzScanner(f *testing.F) {
	f.Add(serverStream(f, 3), 17)
	f.Add(serverStream(f, 1), 200)
	f.Add([]byte{TokenDone, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 5)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		whole, werr := scanIn(t, b, nil)
		if cut < 0 {
			cut = -cut
		}
		if len(b) == 0 {
			return
		}
		cut %= len(b)
		split, serr := scanIn(t, b, []int{cut})
		if (werr == nil) != (serr == nil) {
			t.Fatalf("whole: %v; cut at %d: %v", werr, cut, serr)
		}
		if werr == nil && !reflect.DeepEqual(whole, split) {
			t.Fatalf("cut at %d changes the tokens: %+v vs %+v", cut, whole, split)
		}
	})
}
