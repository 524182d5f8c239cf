package wire

import (
	"math/bits"
	"strings"
)

// Capabilities are the capability flags the client and server exchange in
// the handshake. The low 32 bits are MySQL's CLIENT_* flags; the high 32
// bits are MariaDB's extended capabilities (MARIADB_CLIENT_*), which MariaDB
// carries in the handshake's filler bytes when CLIENT_MYSQL (bit 0) is clear.
type Capabilities uint64

const (
	ClientLongPassword               Capabilities = 1 << 0 // CLIENT_LONG_PASSWORD; MariaDB calls it CLIENT_MYSQL
	ClientFoundRows                  Capabilities = 1 << 1
	ClientLongFlag                   Capabilities = 1 << 2
	ClientConnectWithDB              Capabilities = 1 << 3
	ClientNoSchema                   Capabilities = 1 << 4
	ClientCompress                   Capabilities = 1 << 5
	ClientODBC                       Capabilities = 1 << 6
	ClientLocalFiles                 Capabilities = 1 << 7
	ClientIgnoreSpace                Capabilities = 1 << 8
	ClientProtocol41                 Capabilities = 1 << 9
	ClientInteractive                Capabilities = 1 << 10
	ClientSSL                        Capabilities = 1 << 11
	ClientIgnoreSIGPIPE              Capabilities = 1 << 12
	ClientTransactions               Capabilities = 1 << 13
	ClientReserved                   Capabilities = 1 << 14
	ClientSecureConnection           Capabilities = 1 << 15 // CLIENT_RESERVED2 in MySQL 8
	ClientMultiStatements            Capabilities = 1 << 16
	ClientMultiResults               Capabilities = 1 << 17
	ClientPSMultiResults             Capabilities = 1 << 18
	ClientPluginAuth                 Capabilities = 1 << 19
	ClientConnectAttrs               Capabilities = 1 << 20
	ClientPluginAuthLenEncClientData Capabilities = 1 << 21
	ClientCanHandleExpiredPasswords  Capabilities = 1 << 22
	ClientSessionTrack               Capabilities = 1 << 23
	ClientDeprecateEOF               Capabilities = 1 << 24
	ClientOptionalResultsetMetadata  Capabilities = 1 << 25
	ClientZstdCompressionAlgorithm   Capabilities = 1 << 26
	ClientQueryAttributes            Capabilities = 1 << 27
	MultiFactorAuthentication        Capabilities = 1 << 28
	ClientCapabilityExtension        Capabilities = 1 << 29
	ClientSSLVerifyServerCert        Capabilities = 1 << 30
	ClientRememberOptions            Capabilities = 1 << 31

	MariaDBClientProgress           Capabilities = 1 << 32
	MariaDBClientComMulti           Capabilities = 1 << 33
	MariaDBClientStmtBulkOperations Capabilities = 1 << 34
	MariaDBClientExtendedMetadata   Capabilities = 1 << 35
	MariaDBClientCacheMetadata      Capabilities = 1 << 36
	MariaDBClientBulkUnitResults    Capabilities = 1 << 37
)

// ClientMySQL is MariaDB's name for bit 0: a peer that clears it speaks
// MariaDB's extended capabilities.
const ClientMySQL = ClientLongPassword

var capabilityNames = [...]string{
	"CLIENT_LONG_PASSWORD", "CLIENT_FOUND_ROWS", "CLIENT_LONG_FLAG", "CLIENT_CONNECT_WITH_DB",
	"CLIENT_NO_SCHEMA", "CLIENT_COMPRESS", "CLIENT_ODBC", "CLIENT_LOCAL_FILES",
	"CLIENT_IGNORE_SPACE", "CLIENT_PROTOCOL_41", "CLIENT_INTERACTIVE", "CLIENT_SSL",
	"CLIENT_IGNORE_SIGPIPE", "CLIENT_TRANSACTIONS", "CLIENT_RESERVED", "CLIENT_SECURE_CONNECTION",
	"CLIENT_MULTI_STATEMENTS", "CLIENT_MULTI_RESULTS", "CLIENT_PS_MULTI_RESULTS", "CLIENT_PLUGIN_AUTH",
	"CLIENT_CONNECT_ATTRS", "CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA", "CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS", "CLIENT_SESSION_TRACK",
	"CLIENT_DEPRECATE_EOF", "CLIENT_OPTIONAL_RESULTSET_METADATA", "CLIENT_ZSTD_COMPRESSION_ALGORITHM", "CLIENT_QUERY_ATTRIBUTES",
	"MULTI_FACTOR_AUTHENTICATION", "CLIENT_CAPABILITY_EXTENSION", "CLIENT_SSL_VERIFY_SERVER_CERT", "CLIENT_REMEMBER_OPTIONS",
	"MARIADB_CLIENT_PROGRESS", "MARIADB_CLIENT_COM_MULTI", "MARIADB_CLIENT_STMT_BULK_OPERATIONS", "MARIADB_CLIENT_EXTENDED_METADATA",
	"MARIADB_CLIENT_CACHE_METADATA", "MARIADB_CLIENT_BULK_UNIT_RESULTS",
}

// Has reports whether every flag of f is set.
func (c Capabilities) Has(f Capabilities) bool { return c&f == f }

// String lists the flags by their protocol names, joined by "|".
func (c Capabilities) String() string {
	if c == 0 {
		return "0"
	}
	return flagNames(uint64(c), capabilityNames[:])
}

// StatusFlags are the SERVER_STATUS_* flags in OK and EOF packets.
type StatusFlags uint16

const (
	ServerStatusInTrans            StatusFlags = 0x0001
	ServerStatusAutocommit         StatusFlags = 0x0002
	ServerMoreResultsExists        StatusFlags = 0x0008
	ServerStatusNoGoodIndexUsed    StatusFlags = 0x0010
	ServerStatusNoIndexUsed        StatusFlags = 0x0020
	ServerStatusCursorExists       StatusFlags = 0x0040
	ServerStatusLastRowSent        StatusFlags = 0x0080
	ServerStatusDBDropped          StatusFlags = 0x0100
	ServerStatusNoBackslashEscapes StatusFlags = 0x0200
	ServerStatusMetadataChanged    StatusFlags = 0x0400
	ServerQueryWasSlow             StatusFlags = 0x0800
	ServerPSOutParams              StatusFlags = 0x1000
	ServerStatusInTransReadonly    StatusFlags = 0x2000
	ServerSessionStateChanged      StatusFlags = 0x4000
)

var statusNames = [...]string{
	"SERVER_STATUS_IN_TRANS", "SERVER_STATUS_AUTOCOMMIT", "SERVER_STATUS_BIT_2", "SERVER_MORE_RESULTS_EXISTS",
	"SERVER_STATUS_NO_GOOD_INDEX_USED", "SERVER_STATUS_NO_INDEX_USED", "SERVER_STATUS_CURSOR_EXISTS", "SERVER_STATUS_LAST_ROW_SENT",
	"SERVER_STATUS_DB_DROPPED", "SERVER_STATUS_NO_BACKSLASH_ESCAPES", "SERVER_STATUS_METADATA_CHANGED", "SERVER_QUERY_WAS_SLOW",
	"SERVER_PS_OUT_PARAMS", "SERVER_STATUS_IN_TRANS_READONLY", "SERVER_SESSION_STATE_CHANGED", "SERVER_STATUS_BIT_15",
}

// Has reports whether every flag of f is set.
func (s StatusFlags) Has(f StatusFlags) bool { return s&f == f }

// String lists the flags by their protocol names, joined by "|".
func (s StatusFlags) String() string {
	if s == 0 {
		return "0"
	}
	return flagNames(uint64(s), statusNames[:])
}

// flagNames joins with "|" the names of the bits set in v, names[i] for
// bit i; a bit beyond names is CAPABILITY_BIT_i.
func flagNames(v uint64, names []string) string {
	var sb strings.Builder
	for ; v != 0; v &= v - 1 {
		i := bits.TrailingZeros64(v)
		if sb.Len() > 0 {
			sb.WriteByte('|')
		}
		if i < len(names) {
			sb.WriteString(names[i])
		} else {
			sb.WriteString("CAPABILITY_BIT_")
			sb.WriteString(itoa(i))
		}
	}
	return sb.String()
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
