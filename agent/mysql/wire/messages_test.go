package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha1"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const allCaps41 = ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientConnectWithDB |
	ClientConnectAttrs | ClientPluginAuthLenEncClientData | ClientSessionTrack | ClientDeprecateEOF | ClientTransactions

func TestHandshakeV10RoundTrip(t *testing.T) {
	for _, h := range []HandshakeV10{
		{ProtocolVersion: 10, ServerVersion: "8.0.36", ConnectionID: 42, AuthPluginData: []byte("abcdefghijklmnopqrst"),
			Capabilities: 0xffffffff&^(ClientCompress|ClientZstdCompressionAlgorithm) | ClientMySQL, CharacterSet: 255,
			Status: ServerStatusAutocommit, AuthPluginName: PluginCachingSHA2},
		{ProtocolVersion: 10, ServerVersion: "5.5.5-10.11.6-MariaDB", ConnectionID: 7, AuthPluginData: []byte("12345678ABCDEFGHIJKL"),
			Capabilities: (allCaps41 | MariaDBClientProgress | MariaDBClientCacheMetadata) &^ ClientMySQL, CharacterSet: 45,
			Status: ServerStatusAutocommit, AuthPluginName: PluginNativePassword},
	} {
		enc := h.Encode(nil)
		var got HandshakeV10
		if err := got.Decode(enc); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, h) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, h)
		}
		if got.IsMariaDB() != strings.Contains(h.ServerVersion, "MariaDB") {
			t.Errorf("IsMariaDB wrong for %q", h.ServerVersion)
		}
	}
	// A greeting that is an ERR packet is returned as the error.
	e := &ErrPacket{Code: 1040, SQLState: "08004", Message: "Too many connections"}
	var h HandshakeV10
	err := h.Decode(e.Encode(nil, ClientProtocol41))
	var got *ErrPacket
	if !errors.As(err, &got) || got.Code != 1040 {
		t.Errorf("ERR greeting: %v", err)
	}
	if err := h.Decode([]byte{9, 'x', 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("protocol 9: %v", err)
	}
}

func TestHandshakeResponseRoundTrip(t *testing.T) {
	for _, h := range []HandshakeResponse41{
		{Capabilities: allCaps41 | ClientMySQL, MaxPacketSize: 1 << 24, CharacterSet: 45, Username: "alice",
			AuthResponse: bytes.Repeat([]byte{0xaa}, 300), Database: "shop", AuthPlugin: PluginCachingSHA2,
			Attributes: []Attribute{{"_os", "linux"}, {"program_name", "mysql"}}},
		{Capabilities: (ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | MariaDBClientProgress) &^ ClientMySQL,
			MaxPacketSize: 0, CharacterSet: 8, Username: "bob", AuthResponse: []byte("0123456789abcdefghij"), AuthPlugin: PluginNativePassword},
		{Capabilities: ClientProtocol41 | ClientMySQL, Username: "old", AuthResponse: []byte("pw")},
		{Capabilities: ClientProtocol41 | ClientMySQL | ClientSecureConnection | ClientZstdCompressionAlgorithm, Username: "z", ZstdLevel: 3},
	} {
		var got HandshakeResponse41
		if err := got.Decode(h.Encode(nil)); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, h) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, h)
		}
	}
	var h HandshakeResponse41
	ssl := (&SSLRequest{Capabilities: allCaps41 | ClientSSL, MaxPacketSize: 1 << 24, CharacterSet: 45}).Encode(nil)
	if err := h.Decode(ssl); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "SSLRequest") {
		t.Errorf("SSLRequest as handshake response: %v", err)
	}
	pre41 := []byte{0x05, 0x00, 0xff, 0xff, 0xff, 'r', 'o', 'o', 't', 0}
	if err := h.Decode(append(pre41, make([]byte, 30)...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("pre-4.1 response: %v", err)
	}
}

func TestSSLRequest(t *testing.T) {
	s := SSLRequest{Capabilities: (allCaps41 | ClientSSL | MariaDBClientExtendedMetadata) &^ ClientMySQL, MaxPacketSize: 16777216, CharacterSet: 33}
	enc := s.Encode(nil)
	if len(enc) != 32 || !IsSSLRequest(enc) {
		t.Fatalf("SSLRequest of %d bytes, IsSSLRequest %v", len(enc), IsSSLRequest(enc))
	}
	var got SSLRequest
	if err := got.Decode(enc); err != nil || got != s {
		t.Errorf("round trip %+v %v", got, err)
	}
	full := (&HandshakeResponse41{Capabilities: allCaps41 | ClientSSL, Username: "u"}).Encode(nil)
	if IsSSLRequest(full) {
		t.Error("a full handshake response taken for an SSLRequest")
	}
	noSSL := (&HandshakeResponse41{Capabilities: ClientProtocol41}).Encode(nil)[:32]
	if IsSSLRequest(noSSL) || got.Decode(noSSL) == nil {
		t.Error("32 bytes without CLIENT_SSL accepted as SSLRequest")
	}
}

func TestGenericResponsePackets(t *testing.T) {
	for _, caps := range []Capabilities{ClientProtocol41, ClientProtocol41 | ClientSessionTrack, ClientTransactions} {
		for _, ok := range []OKPacket{
			{AffectedRows: 3, LastInsertID: 70000, Status: ServerStatusAutocommit, Warnings: 2, Info: "Records: 3  Duplicates: 0  Warnings: 2"},
			{Header: EOFHeader, Status: ServerStatusInTrans},
			{AffectedRows: 1 << 40, Status: ServerSessionStateChanged, Info: "", SessionState: []byte{0, 5, 4, 's', 'h', 'o', 'p'}},
		} {
			if !caps.Has(ClientProtocol41) {
				ok.Warnings = 0
			}
			if !caps.Has(ClientSessionTrack) {
				ok.SessionState = nil
			}
			var got OKPacket
			if err := got.Decode(ok.Encode(nil, caps), caps); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ok) {
				t.Errorf("OK round trip (%s):\n got %+v\nwant %+v", caps, got, ok)
			}
		}
	}
	// Info as string<EOF>, as the documentation describes it.
	var ok OKPacket
	if err := ok.Decode([]byte{0, 1, 0, 2, 0, 0, 0, 'h', 'i', ' ', 'x'}, ClientProtocol41); err != nil || ok.Info != "hi x" {
		t.Errorf("info as string<EOF>: %+v %v", ok, err)
	}

	e := ErrPacket{Code: 1146, SQLState: "42S02", Message: "Table 'x.y' doesn't exist"}
	var got ErrPacket
	if err := got.Decode(e.Encode(nil, ClientProtocol41)); err != nil || got != e {
		t.Errorf("ERR round trip %+v %v", got, err)
	}
	if e.Error() != "ERROR 1146 (42S02): Table 'x.y' doesn't exist" {
		t.Errorf("Error() = %q", e.Error())
	}
	if err := got.Decode((&ErrPacket{Code: 1045, Message: "denied"}).Encode(nil, 0)); err != nil || got.SQLState != "" || got.Message != "denied" {
		t.Errorf("ERR without SQL state: %+v %v", got, err)
	}
	progress := []byte{0xff, 0xff, 0xff, 1, 1, 0, 0x10, 0, 0}
	if !IsProgressReport(progress) || got.Decode(progress) == nil {
		t.Error("progress report")
	}

	eof := EOFPacket{Warnings: 1, Status: ServerMoreResultsExists}
	var geof EOFPacket
	if err := geof.Decode(eof.Encode(nil, ClientProtocol41), ClientProtocol41); err != nil || geof != eof {
		t.Errorf("EOF round trip %+v %v", geof, err)
	}
	if IsEOF(make([]byte, 9)) || !IsEOF([]byte{0xfe}) {
		t.Error("IsEOF length rule")
	}

	sw := AuthSwitchRequest{PluginName: PluginEd25519, PluginData: bytes.Repeat([]byte{7}, 32)}
	var gsw AuthSwitchRequest
	if err := gsw.Decode(sw.Encode(nil)); err != nil || !reflect.DeepEqual(gsw, sw) {
		t.Errorf("auth switch round trip %+v %v", gsw, err)
	}
	if err := gsw.Decode([]byte{0xfe}); err != nil || gsw.PluginName != "mysql_old_password" {
		t.Errorf("old auth switch %+v %v", gsw, err)
	}
	more := AuthMoreData{Data: []byte{CachingSHA2PerformFullAuth}}
	var gmore AuthMoreData
	if err := gmore.Decode(more.Encode(nil)); err != nil || !bytes.Equal(gmore.Data, more.Data) {
		t.Errorf("auth more data %+v %v", gmore, err)
	}

	for _, caps := range []Capabilities{ClientProtocol41, ClientProtocol41 | ClientOptionalResultsetMetadata} {
		p := StmtPrepareOK{StatementID: 9, NumColumns: 3, NumParams: 2, Warnings: 1, MetadataFollows: 1}
		var gp StmtPrepareOK
		if err := gp.Decode(p.Encode(nil, caps), caps); err != nil || gp != p {
			t.Errorf("prepare OK round trip %+v %v", gp, err)
		}
	}
	for _, caps := range []Capabilities{ClientProtocol41, ClientProtocol41 | MariaDBClientExtendedMetadata} {
		for _, d := range []ColumnDefinition41{
			{Catalog: "def", Schema: "s", Table: "t", OrgTable: "t0", Name: "c", OrgName: "c0", CharacterSet: 63,
				ColumnLength: 11, Type: TypeLong, Flags: FlagUnsigned | FlagNotNull, Decimals: 0},
			{Catalog: "def", Name: "d", Type: TypeVarString, HasDefault: true, Default: Value{Text: "dflt"}},
			{Catalog: "def", Name: "n", Type: TypeLong, HasDefault: true, Default: Value{Null: true}},
		} {
			if caps.Has(MariaDBClientExtendedMetadata) {
				d.Extended = []byte{0, 4, 'j', 's', 'o', 'n'}
			}
			var gd ColumnDefinition41
			if err := gd.Decode(d.Encode(nil, caps), caps); err != nil || !reflect.DeepEqual(gd, d) {
				t.Errorf("column definition round trip:\n got %+v\nwant %+v (%v)", gd, d, err)
			}
		}
	}
}

func TestRowsRoundTrip(t *testing.T) {
	cols := []ColumnDefinition41{
		{Type: TypeLongLong, Flags: FlagUnsigned}, {Type: TypeVarString}, {Type: TypeDateTime}, {Type: TypeTime},
		{Type: TypeInt24}, {Type: TypeYear}, {Type: TypeDouble}, {Type: TypeBlob}, {Type: TypeLong},
	}
	values := []Value{{Text: "18446744073709551615"}, {Text: "ünïcode"}, {Text: "1999-12-31 23:59:59.000001"},
		{Text: "-49:00:01"}, {Text: "-8388608"}, {Text: "1901"}, {Text: "-1.5e+300"}, {Text: "/w==", Base64: true}, {Null: true}}
	row, err := EncodeBinaryRow(nil, cols, values)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBinaryRow(row, cols, nil)
	if err != nil || !reflect.DeepEqual(got, values) {
		t.Errorf("binary row: %+v %v", got, err)
	}
	trow, _ := EncodeTextRow(nil, values)
	got, err = DecodeTextRow(trow, len(values), got[:0])
	if err != nil || !reflect.DeepEqual(got, values) {
		t.Errorf("text row: %+v %v", got, err)
	}
	if _, err := DecodeTextRow(trow, len(values)+1, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("text row short of a column: %v", err)
	}
	if _, err := DecodeBinaryRow(row[:len(row)-1], cols, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated binary row: %v", err)
	}
}

func TestScrambles(t *testing.T) {
	scramble := []byte("abcdefghijklmnopqrst")
	// mysql_native_password: the server checks SHA1(resp XOR SHA1(scramble || stored)) == stored,
	// where stored = SHA1(SHA1(password)).
	resp := ScrambleNativePassword(append(scramble, 0), "secret")
	s1 := sha1.Sum([]byte("secret"))
	stored := sha1.Sum(s1[:])
	h := sha1.Sum(append(append([]byte{}, scramble...), stored[:]...))
	for i := range h {
		h[i] ^= resp[i]
	}
	if sha1.Sum(h[:]) != stored {
		t.Error("mysql_native_password response does not verify")
	}
	if ScrambleNativePassword(scramble, "") != nil || ScrambleCachingSHA2(scramble, "") != nil {
		t.Error("empty password must give an empty response")
	}
	if len(ScrambleCachingSHA2(scramble, "pw")) != 32 {
		t.Error("caching_sha2_password response length")
	}
	if !bytes.Equal(CleartextPassword("pw"), []byte("pw\x00")) {
		t.Error("cleartext password")
	}

	// client_ed25519: standard Ed25519 with SHA-512 of the password as the
	// expanded key, so signatures verify with crypto/ed25519.
	nonce := bytes.Repeat([]byte{0x5a}, 32)
	for _, pw := range []string{"secret", "", "0123456789abcdef0123456789abcdef", strings.Repeat("long", 40)} {
		sig := ScrambleEd25519(nonce, pw)
		if !ed25519.Verify(ed25519.PublicKey(Ed25519PublicKey(pw)), nonce, sig) {
			t.Errorf("ed25519 signature for %q does not verify", pw)
		}
		if len(pw) == ed25519.SeedSize {
			if want := ed25519.Sign(ed25519.NewKeyFromSeed([]byte(pw)), nonce); !bytes.Equal(sig, want) {
				t.Errorf("32-byte password: differs from crypto/ed25519")
			}
		}
	}
	// Key stored by MariaDB 10.11 for PASSWORD('secret') under ed25519.
	if got := Ed25519AuthString("secret"); got != "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY" {
		t.Errorf("Ed25519AuthString(secret) = %s", got)
	}
}
