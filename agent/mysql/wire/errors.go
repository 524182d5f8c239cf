package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for bad input wraps one
// of them, so an engine can tell malformed input (close the connection and
// record a malformed_packet event) from I/O failures.
var (
	// ErrMalformed: a payload does not have the structure its first bytes
	// promise (short field, unknown type, trailing garbage where none may be).
	ErrMalformed = errors.New("mysql: malformed packet")
	// ErrPacketTooLarge: a payload's declared length exceeds the configured
	// maximum. Returned as *PacketTooLargeError.
	ErrPacketTooLarge = errors.New("mysql: packet too large")
	// ErrSequence: a packet arrived with a sequence id other than the one
	// expected. Returned as *SequenceError.
	ErrSequence = errors.New("mysql: packet out of sequence")
	// ErrUnknownStatement: COM_STMT_EXECUTE names a statement id that was
	// never prepared (or was closed), so its parameters cannot be decoded.
	ErrUnknownStatement = errors.New("mysql: unknown prepared statement")
)

// PacketTooLargeError says which declared payload length broke the limit.
type PacketTooLargeError struct {
	Declared int // payload length declared so far (sum of chunk headers)
	Limit    int // the Reader's maximum payload size
}

func (e *PacketTooLargeError) Error() string {
	return fmt.Sprintf("mysql: packet payload of %d bytes exceeds the limit of %d bytes", e.Declared, e.Limit)
}

// Is makes errors.Is(err, ErrPacketTooLarge) true.
func (e *PacketTooLargeError) Is(target error) bool { return target == ErrPacketTooLarge }

// SequenceError reports the sequence id expected and the one received.
type SequenceError struct {
	Expected uint8
	Got      uint8
}

func (e *SequenceError) Error() string {
	return fmt.Sprintf("mysql: packet sequence id %d, expected %d", e.Got, e.Expected)
}

// Is makes errors.Is(err, ErrSequence) true.
func (e *SequenceError) Is(target error) bool { return target == ErrSequence }

// malformed builds an error wrapping ErrMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
