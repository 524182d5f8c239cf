package tds

import (
	"encoding/binary"
	"fmt"
)

// PRELOGIN option tokens (MS-TDS 2.2.6.5).
const (
	PreloginVersion         byte = 0x00
	PreloginEncryption      byte = 0x01
	PreloginInstance        byte = 0x02
	PreloginThreadID        byte = 0x03
	PreloginMARS            byte = 0x04
	PreloginTraceID         byte = 0x05
	PreloginFedAuthRequired byte = 0x06
	PreloginNonce           byte = 0x07
	preloginTerminator      byte = 0xFF
)

// Encryption values of PRELOGIN.
const (
	EncryptOff    byte = 0x00 // available, used for the login only
	EncryptOn     byte = 0x01 // available and on
	EncryptNotSup byte = 0x02 // not available
	EncryptReq    byte = 0x03 // required
)

// EncryptionName names an encryption value.
func EncryptionName(e byte) string {
	switch e {
	case EncryptOff:
		return "ENCRYPT_OFF"
	case EncryptOn:
		return "ENCRYPT_ON"
	case EncryptNotSup:
		return "ENCRYPT_NOT_SUP"
	case EncryptReq:
		return "ENCRYPT_REQ"
	}
	return fmt.Sprintf("encryption 0x%02X", e)
}

// PreloginOption is one option as it appeared on the wire.
type PreloginOption struct {
	Token byte
	Data  []byte
}

// Prelogin is a PRELOGIN message. Options keeps every option in wire
// order; the fields are the decoded values of the known ones.
type Prelogin struct {
	Options []PreloginOption

	Version       uint32 // major.minor.build as SQL Server sends it (big-endian)
	SubBuild      uint16
	Encryption    byte
	HasEncryption bool
	Instance      string
	ThreadID      uint32
	MARS          bool
	FedAuth       bool
}

// preloginSizes are the data lengths each known option must have; -1 is
// variable.
var preloginSizes = map[byte]int{
	PreloginVersion:         6,
	PreloginEncryption:      1,
	PreloginInstance:        -1,
	PreloginThreadID:        -1, // 4, or 0 in server answers
	PreloginMARS:            1,
	PreloginTraceID:         36,
	PreloginFedAuthRequired: 1,
	PreloginNonce:           32,
}

// ParsePrelogin decodes a PRELOGIN payload strictly: VERSION first, known
// options only, each once and of its size, data inside the payload after
// the option table.
func ParsePrelogin(b []byte) (*Prelogin, error) {
	p := &Prelogin{}
	seen := map[byte]bool{}
	type entry struct {
		tok    byte
		off, n int
	}
	var entries []entry
	tableEnd := 0
	for i := 0; ; {
		if i >= len(b) {
			return nil, fmt.Errorf("PRELOGIN: option table has no terminator")
		}
		tok := b[i]
		if tok == preloginTerminator {
			tableEnd = i + 1
			break
		}
		if i+5 > len(b) {
			return nil, fmt.Errorf("PRELOGIN: option 0x%02X entry is truncated", tok)
		}
		off := int(binary.BigEndian.Uint16(b[i+1:]))
		n := int(binary.BigEndian.Uint16(b[i+3:]))
		size, known := preloginSizes[tok]
		if !known {
			return nil, fmt.Errorf("PRELOGIN: unknown option 0x%02X", tok)
		}
		if seen[tok] {
			return nil, fmt.Errorf("PRELOGIN: option 0x%02X appears twice", tok)
		}
		if i == 0 && tok != PreloginVersion {
			return nil, fmt.Errorf("PRELOGIN: the first option is 0x%02X, not VERSION", tok)
		}
		seen[tok] = true
		if size >= 0 && n != size {
			return nil, fmt.Errorf("PRELOGIN: option 0x%02X has length %d, want %d", tok, n, size)
		}
		if tok == PreloginThreadID && n != 0 && n != 4 {
			return nil, fmt.Errorf("PRELOGIN: THREADID has length %d, want 4", n)
		}
		if off+n > len(b) {
			return nil, fmt.Errorf("PRELOGIN: option 0x%02X data (offset %d, length %d) runs past the %d-byte payload", tok, off, n, len(b))
		}
		entries = append(entries, entry{tok, off, n})
		i += 5
	}
	if !seen[PreloginVersion] {
		return nil, fmt.Errorf("PRELOGIN: no VERSION option")
	}
	for _, e := range entries {
		if e.n > 0 && e.off < tableEnd {
			return nil, fmt.Errorf("PRELOGIN: option 0x%02X data at offset %d overlaps the option table (which ends at %d)", e.tok, e.off, tableEnd)
		}
		p.Options = append(p.Options, PreloginOption{Token: e.tok, Data: b[e.off : e.off+e.n]})
	}
	for _, o := range p.Options {
		switch o.Token {
		case PreloginVersion:
			p.Version = binary.BigEndian.Uint32(o.Data)
			p.SubBuild = binary.BigEndian.Uint16(o.Data[4:])
		case PreloginEncryption:
			p.Encryption, p.HasEncryption = o.Data[0], true
			if p.Encryption > EncryptReq {
				return nil, fmt.Errorf("PRELOGIN: unknown encryption value 0x%02X", p.Encryption)
			}
		case PreloginInstance:
			s := o.Data
			for i, c := range s {
				if c == 0 {
					s = s[:i]
					break
				}
			}
			p.Instance = string(s)
		case PreloginThreadID:
			if len(o.Data) == 4 {
				p.ThreadID = binary.BigEndian.Uint32(o.Data)
			}
		case PreloginMARS:
			if o.Data[0] > 1 {
				return nil, fmt.Errorf("PRELOGIN: MARS value %d is not 0 or 1", o.Data[0])
			}
			p.MARS = o.Data[0] == 1
		case PreloginFedAuthRequired:
			p.FedAuth = o.Data[0] == 1
		}
	}
	return p, nil
}

// Set replaces (or adds) an option.
func (p *Prelogin) Set(tok byte, data []byte) {
	for i := range p.Options {
		if p.Options[i].Token == tok {
			p.Options[i].Data = data
			return
		}
	}
	p.Options = append(p.Options, PreloginOption{Token: tok, Data: data})
}

// Get returns an option's data.
func (p *Prelogin) Get(tok byte) ([]byte, bool) {
	for _, o := range p.Options {
		if o.Token == tok {
			return o.Data, true
		}
	}
	return nil, false
}

// Append encodes the options in order (VERSION is moved first).
func (p *Prelogin) Append(dst []byte) []byte {
	opts := make([]PreloginOption, 0, len(p.Options))
	for _, o := range p.Options {
		if o.Token == PreloginVersion {
			opts = append([]PreloginOption{o}, opts...)
		} else {
			opts = append(opts, o)
		}
	}
	off := len(opts)*5 + 1
	for _, o := range opts {
		dst = append(dst, o.Token, byte(off>>8), byte(off), byte(len(o.Data)>>8), byte(len(o.Data)))
		off += len(o.Data)
	}
	dst = append(dst, preloginTerminator)
	for _, o := range opts {
		dst = append(dst, o.Data...)
	}
	return dst
}

// VersionBytes is a VERSION option's data.
func VersionBytes(major, minor byte, build, subBuild uint16) []byte {
	return []byte{major, minor, byte(build >> 8), byte(build), byte(subBuild >> 8), byte(subBuild)}
}
