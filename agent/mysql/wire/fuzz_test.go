package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// Seed corpora live in testdata/fuzz/FuzzXxx; they were captured from a
// real MariaDB by TestGenerateFuzzCorpus (WIRE_UPDATE_CORPUS=1). The f.Add
// seeds below cover shapes the captures do not.

func FuzzReadPacket(f *testing.F) {
	f.Add(frame(0, []byte{0x03, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1'}))
	f.Add(append([]byte{0xff, 0xff, 0xff, 0}, make([]byte, 64)...))
	f.Add([]byte{1, 0, 0, 7, 1})
	f.Fuzz(func(t *testing.T, stream []byte) {
		const limit = 1 << 16
		r := NewReader(bytes.NewReader(stream), limit)
		var reframed []byte
		for {
			seq := r.Seq()
			p, err := r.ReadPacket()
			var se *SequenceError
			if errors.As(err, &se) && r.Seq() != se.Got+1 {
				t.Fatalf("Seq %d after a stray packet numbered %d", r.Seq(), se.Got)
			}
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrSequence) && !errors.Is(err, ErrPacketTooLarge) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				break
			}
			if len(p) > limit {
				t.Fatalf("payload of %d bytes over the limit", len(p))
			}
			reframed, _ = AppendPacket(reframed, seq, p)
		}
		// What was read frames back to the bytes consumed.
		if !bytes.HasPrefix(stream, reframed) {
			t.Fatalf("re-framed packets are not a prefix of the input")
		}
	})
}

// fuzzStatements: statement id n%32 has n%32 parameters (corpus files are
// rewritten to match).
func fuzzStatements() *Statements {
	s := NewStatements()
	for i := uint32(0); i < 32; i++ {
		s.Prepared(&StmtPrepareOK{StatementID: i, NumParams: uint16(i), NumColumns: 1})
	}
	s.Apply(&StmtSendLongData{StatementID: 3, ParamID: 1, Data: []byte("long")})
	return s
}

func FuzzDecodeCommand(f *testing.F) {
	caps := uint64(allCaps41)
	f.Add([]byte("\x03SELECT 1"), caps)
	f.Add([]byte("\x03\x01\x01\x00\x01\xfd\x00\x02id\x03abcSELECT 1"), caps|uint64(ClientQueryAttributes))
	f.Add([]byte("\x17\x02\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x80\x0c\x07\x01\x00\x00\x00\x00\x00\x00\x00\x0b\xe8\x07\x02\x1d\x0d\x0e\x0f\x40\xe2\x01\x00"), caps)
	f.Add([]byte("\x17\x03\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x01\x00\xfc\x00\x05"), caps)
	f.Add([]byte("\x11root\x00\x00db\x00\x2d\x00mysql_native_password\x00\x00"), caps)
	f.Fuzz(func(t *testing.T, payload []byte, capBits uint64) {
		c := Capabilities(capBits)
		stmts := fuzzStatements()
		cmd, err := DecodeCommand(payload, c, stmts)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownStatement) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrUnknownStatement: %v", err)
			}
			return
		}
		// What decodes re-encodes to something that decodes the same.
		enc, err := cmd.Encode(nil, c)
		if err != nil {
			t.Fatalf("re-encoding %s %+v: %v", cmd.Type(), cmd, err)
		}
		again, err := DecodeCommand(enc, c, stmts)
		if err != nil {
			t.Fatalf("decoding re-encoded %s: %v", cmd.Type(), err)
		}
		if !reflect.DeepEqual(cmd, again) {
			t.Fatalf("%s not stable:\n first %+v\nsecond %+v", cmd.Type(), cmd, again)
		}
		stmts.Apply(cmd)
	})
}

func FuzzDecodeHandshake(f *testing.F) {
	f.Add((&HandshakeV10{ProtocolVersion: 10, ServerVersion: "8.0.36", AuthPluginData: []byte("abcdefghijklmnopqrst"),
		Capabilities: allCaps41 | ClientMySQL, AuthPluginName: PluginCachingSHA2}).Encode(nil))
	f.Add((&SSLRequest{Capabilities: allCaps41 | ClientSSL}).Encode(nil))
	f.Add((&AuthSwitchRequest{PluginName: PluginEd25519, PluginData: make([]byte, 32)}).Encode(nil))
	f.Add((&LocalInfileRequest{Filename: "/tmp/rows.csv"}).Encode(nil))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var h HandshakeV10
		if err := h.Decode(payload); err == nil {
			_ = h.Encode(nil)
			_ = h.IsMariaDB()
		} else {
			var e *ErrPacket
			if !errors.Is(err, ErrMalformed) && !errors.As(err, &e) {
				t.Fatalf("greeting error kind: %v", err)
			}
		}
		var r HandshakeResponse41
		if err := r.Decode(payload); err == nil {
			var again HandshakeResponse41
			if err := again.Decode(r.Encode(nil)); err != nil || !reflect.DeepEqual(r, again) {
				t.Fatalf("handshake response not stable: %+v / %+v %v", r, again, err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("handshake response error kind: %v", err)
		}
		var s SSLRequest
		if s.Decode(payload) == nil && !IsSSLRequest(payload) {
			t.Fatalf("SSLRequest decoded but IsSSLRequest false")
		}
		var sw AuthSwitchRequest
		_ = sw.Decode(payload)
		var li LocalInfileRequest
		if err := li.Decode(payload); err == nil {
			if !IsLocalInfileRequest(payload) || string(li.Encode(nil)) != string(payload) {
				t.Fatalf("LOCAL INFILE request not stable: %q", payload)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("LOCAL INFILE request error kind: %v", err)
		}
		var more AuthMoreData
		_ = more.Decode(payload)
	})
}

func FuzzResponse(f *testing.F) {
	caps := uint64(allCaps41)
	col := (&ColumnDefinition41{Catalog: "def", Name: "c", Type: TypeLong}).Encode(nil, allCaps41)
	var stream []byte
	for i, p := range [][]byte{{1}, col, {0, 0, 1, 0, 0, 0}, {0xfe, 0, 0, 2, 0, 0, 0}} {
		stream, _ = AppendPacket(stream, uint8(i+1), p)
	}
	f.Add(uint64(ComStmtExecute), caps, stream)
	f.Add(uint64(ComQuery), caps, frame(1, []byte("\xfbfile")))
	// LOCAL INFILE request, then the server's OK once the file was sent.
	infile, _ := AppendPacket(nil, 1, (&LocalInfileRequest{Filename: "rows.csv"}).Encode(nil))
	infile, _ = AppendPacket(infile, 4, []byte{0, 3, 0, 2, 0, 0, 0})
	f.Add(uint64(ComQuery), caps, infile)
	// The widest result set the protocol allows, and one column more.
	wide, _ := AppendPacket(nil, 1, AppendLenEncInt(nil, MaxColumns))
	wide, _ = AppendPacket(wide, 2, col)
	f.Add(uint64(ComQuery), caps, wide)
	f.Add(uint64(ComQuery), caps, frame(1, AppendLenEncInt(nil, MaxColumns+1)))
	f.Fuzz(func(t *testing.T, cmd uint64, capBits uint64, stream []byte) {
		c := Capabilities(capBits)
		d := NewResponseDecoder(c)
		d.Begin(CommandType(cmd))
		cols := []ColumnDefinition41{{Type: TypeLong}, {Type: TypeVarString}, {Type: TypeDateTime}, {Type: TypeTime}, {Type: TypeDouble}}
		for _, p := range splitPackets(stream) {
			var ok OKPacket
			_ = ok.Decode(p, c)
			var e ErrPacket
			_ = e.Decode(p)
			var eof EOFPacket
			_ = eof.Decode(p, c)
			var def ColumnDefinition41
			_ = def.Decode(p, c)
			var prep StmtPrepareOK
			_ = prep.Decode(p, c)
			_, _ = DecodeTextRow(p, 3, nil)
			_, _ = DecodeBinaryRow(p, cols, nil)
			if !d.Done() {
				if _, err := d.Feed(p); err != nil && !errors.Is(err, ErrMalformed) {
					t.Fatalf("response decoder error kind: %v", err)
				}
			}
		}
	})
}

// splitPackets cuts a stream into payloads by their 3-byte lengths,
// ignoring sequence ids (the response decoder is the point here).
func splitPackets(stream []byte) [][]byte {
	var out [][]byte
	for len(stream) >= 4 {
		n := int(stream[0]) | int(stream[1])<<8 | int(stream[2])<<16
		if n > len(stream)-4 {
			break
		}
		out = append(out, stream[4:4+n])
		stream = stream[4+n:]
	}
	return out
}
