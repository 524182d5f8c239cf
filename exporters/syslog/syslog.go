// Package syslog is the exporters' syslog sink: RFC 5424 messages over TCP
// (RFC 6587 octet counting) or TLS (RFC 5425), one event per message.
package syslog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/internal/tlsfiles"
)

// Type is the sink's type in the configuration.
const Type = "syslog"

func init() {
	exporters.Register(Type, func(_ context.Context, p exporters.Params) (exporters.Sink, error) {
		var c Config
		if err := p.Decode(&c); err != nil {
			return nil, err
		}
		return New(c)
	})
}

// Defaults of Config.
const (
	DefaultAppName = "tollgate"
	// DefaultSDID names the structured data element that carries the
	// event's id and type. 32473 is the private enterprise number RFC 5612
	// reserves for examples; set sd_id to your own.
	DefaultSDID    = "tollgate@32473"
	DefaultTimeout = 30 * time.Second
)

// Config is the sink's settings.
type Config struct {
	// Address of the receiver, host:port.
	Address string `yaml:"address"`
	// TLS turns on RFC 5425 (syslog over TLS).
	TLS tlsfiles.Config `yaml:"tls"`
	// Facility: kern, user, mail, daemon, auth, syslog, lpr, news, uucp,
	// cron, authpriv, ftp, local0 … local7 (default local0).
	Facility string `yaml:"facility"`
	// Hostname and AppName of the header (this machine's name, tollgate).
	Hostname string `yaml:"hostname"`
	AppName  string `yaml:"app_name"`
	// SDID names the structured data element with the event's id, type
	// and cluster.
	SDID string `yaml:"sd_id"`
	// MaxMessageBytes rejects (dead-letters) longer messages instead of
	// letting the receiver cut them; 0 sends any size. Match the
	// receiver's limit (rsyslog: maxMessageSize, 8 KiB by default).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// Timeout bounds connecting, writing a batch and waiting for the
	// receiver to acknowledge it.
	Timeout config.Duration `yaml:"timeout"`
}

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// Sink writes to one receiver over one connection.
type Sink struct {
	c        Config
	tls      *tls.Config
	facility int
	hostname string
	conn     net.Conn     // what is written to (TLS or plain)
	tcp      *net.TCPConn // the TCP connection underneath
	buf      []byte
	frame    []byte
}

// New checks the settings; it connects on the first delivery.
func New(c Config) (*Sink, error) {
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return nil, fmt.Errorf("syslog: settings.address %q is not host:port", c.Address)
	}
	if c.Facility == "" {
		c.Facility = "local0"
	}
	f, ok := facilities[strings.ToLower(c.Facility)]
	if !ok {
		return nil, fmt.Errorf("syslog: settings.facility %q is not a syslog facility (e.g. local0, auth, authpriv)", c.Facility)
	}
	if c.AppName == "" {
		c.AppName = DefaultAppName
	}
	if c.SDID == "" {
		c.SDID = DefaultSDID
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
	host := c.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	for _, h := range []struct{ name, v string }{{"hostname", host}, {"app_name", c.AppName}, {"sd_id", c.SDID}} {
		if err := headerToken(h.v); err != nil {
			return nil, fmt.Errorf("syslog: settings.%s: %w", h.name, err)
		}
	}
	if len(host) > 255 || len(c.AppName) > 48 || len(c.SDID) > 32 {
		return nil, errors.New("syslog: hostname (255), app_name (48) or sd_id (32) is too long")
	}
	if strings.ContainsAny(c.SDID, `= ]"`) {
		return nil, fmt.Errorf("syslog: settings.sd_id %q holds '=', ' ', ']' or '\"'", c.SDID)
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("syslog: settings.%w", err)
	}
	if tc != nil && tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	return &Sink{c: c, tls: tc, facility: f, hostname: host}, nil
}

// headerToken checks a header field: printable US-ASCII, no spaces.
func headerToken(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return fmt.Errorf("%q holds a character outside printable US-ASCII", s)
		}
	}
	return nil
}

func severity(code string) int {
	if code == "" {
		return 6
	}
	switch code[len(code)-1] {
	case 'W':
		return 4 // warning
	case 'E':
		return 3 // err
	}
	return 6 // info
}

// AppendMessage appends the RFC 5424 message of r (without framing).
func (s *Sink) AppendMessage(dst []byte, r *exporters.Record) []byte {
	dst = append(dst, '<')
	dst = strconv.AppendInt(dst, int64(s.facility*8+severity(r.Code)), 10)
	dst = append(dst, ">1 "...)
	// TIME-SECFRAC allows at most 6 digits.
	dst = r.Time.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	dst = append(dst, ' ')
	dst = append(dst, s.hostname...)
	dst = append(dst, ' ')
	dst = append(dst, s.c.AppName...)
	dst = append(dst, " - "...)
	if code := r.Code; code != "" && headerToken(code) == nil && len(code) <= 32 {
		dst = append(dst, code...)
	} else {
		dst = append(dst, '-')
	}
	dst = append(dst, " ["...)
	dst = append(dst, s.c.SDID...)
	dst = appendParam(dst, "id", r.ID)
	dst = appendParam(dst, "type", r.Type)
	if r.Cluster != "" {
		dst = appendParam(dst, "cluster", r.Cluster)
	}
	dst = append(dst, "] "...)
	return append(dst, r.Data...)
}

// appendParam appends ` name="value"`, escaping '"', '\' and ']'.
func appendParam(dst []byte, name, v string) []byte {
	dst = append(dst, ' ')
	dst = append(dst, name...)
	dst = append(dst, '=', '"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '"', '\\', ']':
			dst = append(dst, '\\', c)
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// Deliver writes the batch, octet-counted, and returns once the
// receiver's TCP stack has acknowledged every byte of it. Syslog has no
// application-level receipt; this is the closest confirmation it offers.
func (s *Sink) Deliver(ctx context.Context, recs []exporters.Record) error {
	re := exporters.RecordErrors{}
	s.buf = s.buf[:0]
	for i := range recs {
		s.frame = s.AppendMessage(s.frame[:0], &recs[i])
		if s.c.MaxMessageBytes > 0 && len(s.frame) > s.c.MaxMessageBytes {
			re[i] = exporters.Permanent(fmt.Errorf("syslog: message of %d bytes is over max_message_bytes %d", len(s.frame), s.c.MaxMessageBytes))
			continue
		}
		s.buf = strconv.AppendInt(s.buf, int64(len(s.frame)), 10)
		s.buf = append(s.buf, ' ')
		s.buf = append(s.buf, s.frame...)
	}
	if cap(s.frame) > 1<<20 {
		s.frame = nil
	}
	if len(s.buf) > 0 {
		if err := s.send(ctx); err != nil {
			if len(re) == 0 {
				return err
			}
			for i := range recs {
				if _, ok := re[i]; !ok {
					re[i] = err
				}
			}
		}
	}
	if cap(s.buf) > 16<<20 {
		s.buf = nil
	}
	if len(re) == 0 {
		return nil
	}
	return re
}

func (s *Sink) send(ctx context.Context) error {
	if s.conn != nil && !s.alive() {
		s.drop()
	}
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(s.c.Timeout.Std())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.conn.SetWriteDeadline(deadline)
	if _, err := s.conn.Write(s.buf); err != nil {
		s.drop()
		return fmt.Errorf("syslog: write to %s: %w", s.c.Address, err)
	}
	if err := s.waitAcked(ctx, deadline); err != nil {
		s.drop()
		return err
	}
	return nil
}

func (s *Sink) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: s.c.Timeout.Std(), KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", s.c.Address)
	if err != nil {
		return fmt.Errorf("syslog: connect to %s: %w", s.c.Address, err)
	}
	tcp := c.(*net.TCPConn)
	s.tcp, s.conn = tcp, tcp
	if s.tls != nil {
		tc := tls.Client(tcp, s.tls)
		hctx, cancel := context.WithTimeout(ctx, s.c.Timeout.Std())
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = tcp.Close()
			s.conn, s.tcp = nil, nil
			return fmt.Errorf("syslog: TLS handshake with %s: %w", s.c.Address, err)
		}
		s.conn = tc
	}
	return nil
}

// alive says whether the receiver has not closed the connection: it never
// sends application data, so a read that does not time out at once means
// it is gone. TLS reads go through the TLS connection, which consumes
// post-handshake messages (session tickets) itself; a read timeout leaves
// it usable.
func (s *Sink) alive() bool {
	_ = s.conn.SetReadDeadline(time.Now().Add(100 * time.Microsecond))
	var b [1]byte
	_, err := s.conn.Read(b[:])
	_ = s.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitAcked waits until the kernel's send queue of the connection is
// empty: every byte written was acknowledged by the receiver's TCP stack.
func (s *Sink) waitAcked(ctx context.Context, deadline time.Time) error {
	pause := 50 * time.Microsecond
	for {
		n, err := unacked(s.tcp)
		if err != nil {
			// Without the count (another OS), a completed write is all
			// we know.
			return nil
		}
		if n == 0 {
			if !s.alive() {
				return fmt.Errorf("syslog: %s closed the connection", s.c.Address)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("syslog: %s has not acknowledged %d bytes within %s", s.c.Address, n, s.c.Timeout.Std())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(pause)
		if pause < 5*time.Millisecond {
			pause *= 2
		}
	}
}

func (s *Sink) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	s.conn, s.tcp = nil, nil
}

// Close closes the connection.
func (s *Sink) Close() error {
	if s.conn == nil {
		return nil
	}
	if tc, ok := s.conn.(*tls.Conn); ok {
		_ = tc.CloseWrite()
	}
	err := s.conn.Close()
	s.conn, s.tcp = nil, nil
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
