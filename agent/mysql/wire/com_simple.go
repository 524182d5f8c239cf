package wire

// Commands that are the command byte alone.

// Quit is COM_QUIT: close the connection. The server sends no response.
type Quit struct{}

// Ping is COM_PING: the server answers OK.
type Ping struct{}

// Statistics is COM_STATISTICS: the server answers with a human-readable
// string (not an OK packet).
type Statistics struct{}

// ProcessInfo is COM_PROCESS_INFO (deprecated SHOW PROCESSLIST): the server
// answers with a result set.
type ProcessInfo struct{}

// ResetConnection is COM_RESET_CONNECTION: reset session state and close
// prepared statements without re-authenticating; the server answers OK.
type ResetConnection struct{}

func (*Quit) Type() CommandType            { return ComQuit }
func (*Ping) Type() CommandType            { return ComPing }
func (*Statistics) Type() CommandType      { return ComStatistics }
func (*ProcessInfo) Type() CommandType     { return ComProcessInfo }
func (*ResetConnection) Type() CommandType { return ComResetConnection }

func (*Quit) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(dst, byte(ComQuit)), nil
}
func (*Ping) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(dst, byte(ComPing)), nil
}
func (*Statistics) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(dst, byte(ComStatistics)), nil
}
func (*ProcessInfo) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(dst, byte(ComProcessInfo)), nil
}
func (*ResetConnection) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(dst, byte(ComResetConnection)), nil
}
