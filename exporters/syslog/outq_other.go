//go:build !linux

package syslog

import (
	"errors"
	"net"
)

// unacked cannot read the send queue here.
func unacked(*net.TCPConn) (int, error) {
	return 0, errors.New("send queue size unknown on this system")
}
