package state

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-db/tollgate/events"
)

// escapeKey turns a name into something that is both one NATS subject
// token and a valid key-value key: letters, digits, '-' and '_' stay, every
// other byte becomes =XX. User names such as alice@example.com cannot be
// subject tokens as they are ('.' separates tokens); the event body keeps
// the name itself, so the escaping is only an address.
func escapeKey(name string) string {
	safe := true
	for i := 0; i < len(name); i++ {
		if !keyByte(name[i]) {
			safe = false
			break
		}
	}
	if safe {
		return name
	}
	var b strings.Builder
	b.Grow(len(name) + 8)
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(name); i++ {
		c := name[i]
		if keyByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// subject is the STATE subject of one aggregate instance.
func subject(agg, id string) string { return events.StateSubject(agg, escapeKey(id)) }

// ValidUserName says why name cannot name a user, or nil: 1 to 128
// printable characters without spaces.
func ValidUserName(name string) error {
	if name == "" || len(name) > 128 || !utf8.ValidString(name) {
		return fmt.Errorf("user name %q: want 1 to 128 characters of valid UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("user name %q: %q is not allowed (no spaces or control characters)", name, r)
		}
	}
	return nil
}

var dbNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$`)

// ValidDatabaseName says why name cannot name a database, or nil. Names
// route connections (TLS SNI), so they keep to what a DNS label can carry,
// plus '_' and '.'.
func ValidDatabaseName(name string) error {
	if !dbNameRE.MatchString(name) {
		return fmt.Errorf("database name %q: want 1 to 63 letters, digits, '.', '-' or '_', starting with a letter or digit", name)
	}
	return nil
}

var tokenIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TokenID is the identifier of a join token: the hex SHA-256 of its value.
// The value is 256 random bits, so its hash can be stored and audited
// without helping anyone find the value.
func TokenID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Token types.
const (
	// TokenDB lets an agent join and serve databases.
	TokenDB = "db"
	// TokenProxy lets a proxy join: its host certificate carries the
	// proxies' host id, which no agent can get.
	TokenProxy = "proxy"
)

// CA types whose public certificates are published.
var caTypes = map[string]bool{"user": true, "host": true, "db": true, "db-client": true}
