package wire

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"hash"

	"filippo.io/edwards25519"
)

// Authentication plugin names.
const (
	PluginNativePassword = "mysql_native_password"
	PluginCachingSHA2    = "caching_sha2_password"
	PluginEd25519        = "client_ed25519"
	PluginClearPassword  = "mysql_clear_password"
)

// scrambleLength is the length of the scramble mysql_native_password and
// caching_sha2_password use (a server may send it with a trailing NUL).
const scrambleLength = 20

func scramble20(s []byte) []byte {
	if len(s) > scrambleLength {
		return s[:scrambleLength]
	}
	return s
}

// ScrambleNativePassword computes the mysql_native_password auth response:
//
//	SHA1(password) XOR SHA1(scramble || SHA1(SHA1(password)))
//
// with the 20-byte scramble from the greeting or the auth switch. An empty
// password gives an empty response, as the protocol requires.
func ScrambleNativePassword(scramble []byte, password string) []byte {
	return xorScramble(sha1.New, password, scramble, true)
}

// ScrambleCachingSHA2 computes caching_sha2_password's fast-path response:
//
//	SHA256(password) XOR SHA256(SHA256(SHA256(password)) || scramble)
//
// If the server answers CachingSHA2PerformFullAuth the client must send
// CleartextPassword over TLS (or RSA-encrypt it, not provided here).
func ScrambleCachingSHA2(scramble []byte, password string) []byte {
	return xorScramble(sha256.New, password, scramble, false)
}

// xorScramble is what both scrambles compute with their hash H:
// H(password) XOR H(x || y), where x and y are the scramble and
// H(H(password)), the scramble first when scrambleFirst. An empty password
// gives an empty response.
func xorScramble(newHash func() hash.Hash, password string, scramble []byte, scrambleFirst bool) []byte {
	if password == "" {
		return nil
	}
	sum := func(b []byte) []byte {
		h := newHash()
		h.Write(b)
		return h.Sum(nil)
	}
	stage1 := sum([]byte(password))
	stage2 := sum(stage1)
	h := newHash()
	if scrambleFirst {
		h.Write(scramble20(scramble))
		h.Write(stage2)
	} else {
		h.Write(stage2)
		h.Write(scramble20(scramble))
	}
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= stage1[i]
	}
	return out
}

// CleartextPassword is the password followed by a NUL: what
// caching_sha2_password full authentication (over TLS) and
// mysql_clear_password send.
func CleartextPassword(password string) []byte {
	return append([]byte(password), 0)
}

// ScrambleEd25519 computes MariaDB's client_ed25519 response: an Ed25519
// signature of the server's nonce with a key derived from the password.
//
// MariaDB (plugin/auth_ed25519, ref10 crypto_sign) hashes the password of any
// length with SHA-512 where RFC 8032 hashes a 32-byte seed; the rest is
// standard Ed25519 (clamped scalar from the first half, nonce prefix from the
// second). crypto/ed25519 only takes 32-byte seeds, so the signature is
// assembled here with filippo.io/edwards25519. For a 32-byte password the
// result equals crypto/ed25519 with that password as seed, and every
// signature verifies with crypto/ed25519.Verify under Ed25519PublicKey.
func ScrambleEd25519(nonce []byte, password string) []byte {
	h := sha512.Sum512([]byte(password))
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic("edwards25519: clamped scalar of 32 bytes refused: " + err.Error())
	}
	A := new(edwards25519.Point).ScalarBaseMult(s)

	rh := sha512.New()
	rh.Write(h[32:])
	rh.Write(nonce)
	r, err := edwards25519.NewScalar().SetUniformBytes(rh.Sum(nil))
	if err != nil {
		panic("edwards25519: 64-byte digest refused: " + err.Error())
	}
	R := new(edwards25519.Point).ScalarBaseMult(r)

	kh := sha512.New()
	kh.Write(R.Bytes())
	kh.Write(A.Bytes())
	kh.Write(nonce)
	k, err := edwards25519.NewScalar().SetUniformBytes(kh.Sum(nil))
	if err != nil {
		panic("edwards25519: 64-byte digest refused: " + err.Error())
	}
	S := edwards25519.NewScalar().MultiplyAdd(k, s, r)
	return append(R.Bytes(), S.Bytes()...)
}

// Ed25519PublicKey returns the public key MariaDB derives from a password
// for the ed25519 plugin.
func Ed25519PublicKey(password string) []byte {
	h := sha512.Sum512([]byte(password))
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic("edwards25519: clamped scalar of 32 bytes refused: " + err.Error())
	}
	return new(edwards25519.Point).ScalarBaseMult(s).Bytes()
}

// Ed25519AuthString is the authentication_string MariaDB stores for an
// ed25519 user: the public key in unpadded base64 (what
// PASSWORD('...') gives under IDENTIFIED VIA ed25519).
func Ed25519AuthString(password string) string {
	return base64.RawStdEncoding.EncodeToString(Ed25519PublicKey(password))
}
