// Package password hashes and checks user passwords with argon2id (RFC
// 9106), stored in the PHC string format that other tools read:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt, base64>$<key, base64>
//
// The parameters travel inside each hash, so raising them later only
// affects passwords set from then on; old hashes keep verifying.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Params are the argon2id cost parameters.
type Params struct {
	// Memory in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the degree of parallelism.
	Threads uint8
	// SaltLen and KeyLen in bytes.
	SaltLen uint32
	KeyLen  uint32
}

// The two configurations OWASP's Password Storage Cheat Sheet lists first
// for argon2id; they cost about the same CPU, trading memory for passes.
var (
	// OWASP19M is m=19 MiB, t=2, p=1: the default. It bounds the memory a
	// burst of logins can take (19 MiB each) on small brokers.
	OWASP19M = Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
	// OWASP46M is m=46 MiB, t=1, p=1.
	OWASP46M = Params{Memory: 46 * 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	// Default is what Hash uses when given zero Params.
	Default = OWASP19M
)

// Password length limits. NIST SP 800-63B-4 asks for at least 15
// characters when a password is the only factor, and for long maximums
// (at least 64) so that passphrases work; the maximum here only keeps
// absurd inputs off the hash.
const (
	MinLength = 15
	MaxBytes  = 1024
)

// ErrMismatch is returned by Verify for a wrong password.
var ErrMismatch = errors.New("password: does not match")

// Check says why pw cannot be a password, or nil.
func Check(pw string) error {
	if !utf8.ValidString(pw) {
		return errors.New("password is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(pw); n < MinLength {
		return fmt.Errorf("password is %d characters long; use at least %d (a passphrase of several words is easiest)", n, MinLength)
	}
	if len(pw) > MaxBytes {
		return fmt.Errorf("password is %d bytes long; at most %d are accepted", len(pw), MaxBytes)
	}
	return nil
}

// Hash returns the PHC string of pw with a fresh random salt. Zero Params
// mean Default.
func Hash(pw string, p Params) (string, error) {
	if p == (Params{}) {
		p = Default
	}
	if err := p.validate(); err != nil {
		return "", err
	}
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify checks pw against a PHC string made by Hash: nil when it
// matches, ErrMismatch when it does not, another error when the hash is
// malformed. The comparison takes the same time wherever the keys differ.
func Verify(encoded, pw string) error {
	p, salt, key, err := Decode(encoded)
	if err != nil {
		return err
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	if subtle.ConstantTimeCompare(got, key) != 1 {
		return ErrMismatch
	}
	return nil
}

// dummySalt keeps VerifyNothing from allocating a salt per call.
var dummySalt = make([]byte, 16)

// VerifyNothing spends the time of one Verify with Default parameters. A
// login for a user that does not exist, or has no password yet, calls it so
// that its answer takes as long as a wrong password's and timing does not
// tell which user names exist.
func VerifyNothing(pw string) {
	p := Default
	_ = argon2.IDKey([]byte(pw), dummySalt, p.Time, p.Memory, p.Threads, p.KeyLen)
}

// Decode reads the parameters, salt and key of a PHC argon2id string.
func Decode(encoded string) (Params, []byte, []byte, error) {
	parts := strings.Split(encoded, "$")
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, key
	if len(parts) != 6 || parts[0] != "" {
		return Params{}, nil, nil, errors.New("password: hash is not a PHC string ($argon2id$v=…$m=…,t=…,p=…$salt$key)")
	}
	if parts[1] != "argon2id" {
		return Params{}, nil, nil, fmt.Errorf("password: hash algorithm %q, want argon2id", parts[1])
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return Params{}, nil, nil, fmt.Errorf("password: argon2 version %q, want v=%d", parts[2], argon2.Version)
	}
	var p Params
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil || n != 3 {
		return Params{}, nil, nil, fmt.Errorf("password: argon2 parameters %q, want m=…,t=…,p=…", parts[3])
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("password: salt: %w", err)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("password: key: %w", err)
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	if err := p.validate(); err != nil {
		return Params{}, nil, nil, err
	}
	return p, salt, key, nil
}

// validate bounds the parameters, also those read from a stored hash: a
// hash with m=4 GiB must not take the broker down.
func (p Params) validate() error {
	switch {
	case p.Memory < 8*uint32(p.Threads) || p.Memory > 1<<20:
		return fmt.Errorf("password: argon2 memory %d KiB out of range (8·p to 1 GiB)", p.Memory)
	case p.Time < 1 || p.Time > 100:
		return fmt.Errorf("password: argon2 time %d out of range (1 to 100)", p.Time)
	case p.Threads < 1:
		return errors.New("password: argon2 parallelism 0")
	case p.SaltLen < 8 || p.SaltLen > 64:
		return fmt.Errorf("password: salt of %d bytes (want 8 to 64)", p.SaltLen)
	case p.KeyLen < 16 || p.KeyLen > 64:
		return fmt.Errorf("password: key of %d bytes (want 16 to 64)", p.KeyLen)
	}
	return nil
}
