package events

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// A frame is the unit of storage in the AUDIT stream: one JetStream
// message holding many events, so the store pays its per-message cost once
// for every event that waited for the same write (group commit). The event
// stays the unit of meaning: readers split a frame into its events and see
// each one exactly as it was encoded. schemas/integrity.md describes the
// format; in short, the payload is JSON lines:
//
//	{"tollgate_frame":1,"id":…,"src":…,"run":…,"fseq":…,"prev":…,"n":…,…}   header
//	{"id":…,"type":…,…}                                                 event 1
//	…                                                                   event n
//	{"sig":…,"cert":…}                                                  trailer, when signed
//
// The signature covers every byte before the trailer; the hash of those
// bytes is the next frame's prev, so a writer's frames form a chain too.
// A message that does not start with the frame prefix is one event on its
// own, as every message was before frames.

// FrameSubject is the subject token that marks frames: a frame is stored
// under audit.<cluster>.frame.<src>.
const FrameSubject = "frame"

// FrameVersion is the frame format this code writes and reads.
const FrameVersion = 1

var framePrefix = []byte(`{"tollgate_frame":`)

// FrameHeader is the first line of a frame.
type FrameHeader struct {
	Version int `json:"tollgate_frame"`
	// ID is the frame's Nats-Msg-Id: a resent frame is stored once.
	ID string `json:"id"`
	// Src names the writer (the host), Run one run of its process; FSeq
	// counts the frames of a run from 0 and Prev is the hash of the
	// previous one (FrameGenesis(Run) for the first).
	Src  string `json:"src"`
	Run  string `json:"run"`
	FSeq uint64 `json:"fseq"`
	Prev string `json:"prev"`
	// N is the number of events; First and Last their earliest and latest
	// time; SIDs the sessions they belong to.
	N     int       `json:"n"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	SIDs  []string  `json:"sids,omitempty"`
	// StateSeq is set on the copy of a STATE event (broker/trail): the
	// sequence of the original in STATE, so a reader of both streams can
	// join them, and a verifier knows the frame holds that one event.
	StateSeq uint64 `json:"state_seq,omitempty"`
}

// FrameTrailer is the last line of a signed frame.
type FrameTrailer struct {
	// Sig is the signature, base64, over the SHA-256 of the frame's signed
	// bytes; Cert the signer's certificate (DER, base64), issued by the
	// host CA.
	Sig  string `json:"sig"`
	Cert string `json:"cert"`
}

// Frame is one decoded AUDIT message.
type Frame struct {
	// Header is nil for a message holding one event without a frame.
	Header *FrameHeader
	// Events are the encoded events, slices of the message data.
	Events [][]byte
	// Signed is what the trailer's signature covers (header and events).
	Signed []byte
	// Trailer is nil when the frame is not signed.
	Trailer *FrameTrailer
}

// IsFrame reports whether data is a frame rather than a single event.
func IsFrame(data []byte) bool { return bytes.HasPrefix(data, framePrefix) }

// SplitEvents calls fn with each event of an AUDIT message, frame or single
// event, in order, without decoding them; it stops at fn's first error.
func SplitEvents(data []byte, fn func(ev []byte) error) error {
	if !IsFrame(data) {
		return fn(data)
	}
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 {
		return errors.New("events: frame: no newline after the header")
	}
	rest := data[nl+1:]
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		if isTrailer(line) {
			return nil
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

var trailerPrefix = []byte(`{"sig":`)

func isTrailer(line []byte) bool { return bytes.HasPrefix(line, trailerPrefix) }

// DecodeFrame splits an AUDIT message into its header, events and trailer.
// A message that is not a frame is returned as a frame of one event with
// no header.
func DecodeFrame(data []byte) (*Frame, error) {
	if !IsFrame(data) {
		return &Frame{Events: [][]byte{data}}, nil
	}
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 {
		return nil, errors.New("events: frame: no newline after the header")
	}
	f := &Frame{Header: &FrameHeader{}}
	if err := json.Unmarshal(data[:nl], f.Header); err != nil {
		return nil, fmt.Errorf("events: frame header: %w", err)
	}
	if f.Header.Version != FrameVersion {
		return nil, fmt.Errorf("events: frame version %d, this build reads %d", f.Header.Version, FrameVersion)
	}
	f.Events = make([][]byte, 0, f.Header.N)
	pos := nl + 1
	f.Signed = data
	for pos < len(data) {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		line := data[pos:end]
		if isTrailer(line) {
			f.Signed = data[:pos]
			f.Trailer = &FrameTrailer{}
			if err := json.Unmarshal(line, f.Trailer); err != nil {
				return nil, fmt.Errorf("events: frame %s trailer: %w", f.Header.ID, err)
			}
			if end < len(data) && end+1 != len(data) {
				return nil, fmt.Errorf("events: frame %s: data after the trailer", f.Header.ID)
			}
			break
		}
		f.Events = append(f.Events, line)
		pos = end + 1
	}
	if len(f.Events) != f.Header.N {
		return nil, fmt.Errorf("events: frame %s holds %d events, its header says %d", f.Header.ID, len(f.Events), f.Header.N)
	}
	return f, nil
}

// Hash is a SHA-256 as the trail writes it: unpadded standard base64.
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hashString(sum)
}

func hashString(sum [sha256.Size]byte) string { return base64.RawStdEncoding.EncodeToString(sum[:]) }

// ChainGenesis is the prev of the first event of session sid.
func ChainGenesis(sid string) string { return Hash([]byte("tollgate/chain/v1\n" + sid)) }

// FrameGenesis is the prev of the first frame of a writer's run.
func FrameGenesis(run string) string { return Hash([]byte("tollgate/frames/v1\n" + run)) }

// sealKey is how a session's last event carries its seal: always the last
// member of the object, so the sealed bytes are the event without it.
var sealKey = []byte(`,"seal":"`)

// Unsealed returns an event's bytes without its seal member, and the seal;
// an event without a seal is returned as is with an empty seal.
func Unsealed(ev []byte) (unsealed []byte, seal string) {
	i := bytes.LastIndex(ev, sealKey)
	if i < 0 || len(ev) < 2 || ev[len(ev)-1] != '}' || ev[len(ev)-2] != '"' {
		return ev, ""
	}
	val := ev[i+len(sealKey) : len(ev)-2]
	if bytes.IndexByte(val, '"') >= 0 {
		return ev, ""
	}
	out := make([]byte, 0, i+1)
	out = append(append(out, ev[:i]...), '}')
	return out, string(val)
}

// EventHash is the hash a session's next event links to: the SHA-256 of
// the event's bytes as stored, without its seal.
func EventHash(ev []byte) string {
	u, _ := Unsealed(ev)
	return Hash(u)
}

// Signer signs frames and seals: the host's key and its certificate from
// the host CA.
type Signer struct {
	Key  crypto.Signer
	Cert *x509.Certificate
	// certB64 is Cert.Raw in base64, made once.
	certB64 string
}

// NewSigner checks that cert is key's certificate.
func NewSigner(key crypto.Signer, cert *x509.Certificate) (*Signer, error) {
	if key == nil || cert == nil {
		return nil, errors.New("events: signer: key and certificate are required")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("events: signer: the certificate is not the key's")
	}
	switch key.Public().(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("events: signer: %T keys are not supported (ECDSA or Ed25519)", key.Public())
	}
	return &Signer{Key: key, Cert: cert, certB64: base64.StdEncoding.EncodeToString(cert.Raw)}, nil
}

// CertB64 is the signer's certificate as trailers and seals carry it.
func (s *Signer) CertB64() string { return s.certB64 }

// Sign signs the SHA-256 of b: ECDSA over the digest, Ed25519 over the
// digest as its message.
func (s *Signer) Sign(b []byte) (string, error) {
	sum := sha256.Sum256(b)
	var sig []byte
	var err error
	switch s.Key.Public().(type) {
	case ed25519.PublicKey:
		sig, err = s.Key.Sign(rand.Reader, sum[:], crypto.Hash(0))
	default:
		sig, err = s.Key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("events: sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// VerifySignature checks sig (base64) over the SHA-256 of b with the
// public key of cert.
func VerifySignature(cert *x509.Certificate, b []byte, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("signature is not base64: %w", err)
	}
	sum := sha256.Sum256(b)
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, sum[:], raw) {
			return errors.New("signature does not match")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, sum[:], raw) {
			return errors.New("signature does not match")
		}
	default:
		return fmt.Errorf("%T keys are not supported", cert.PublicKey)
	}
	return nil
}

// EncodeFrame writes a frame of events (each one encoded event, no
// newline) after dst: the header from h with N, First, Last and SIDs
// filled from the events, then the trailer when s is not nil. It returns
// the frame and its hash (the next frame's Prev).
func EncodeFrame(dst []byte, h FrameHeader, evs [][]byte, s *Signer) (frame []byte, hash string, err error) {
	h.Version = FrameVersion
	h.N = len(evs)
	h.SIDs = h.SIDs[:0]
	seen := map[string]bool{}
	for _, ev := range evs {
		var m struct {
			Time time.Time `json:"time"`
			SID  string    `json:"sid"`
		}
		if err := json.Unmarshal(ev, &m); err != nil {
			return dst, "", fmt.Errorf("events: encode frame: %w", err)
		}
		if h.First.IsZero() || m.Time.Before(h.First) {
			h.First = m.Time
		}
		if m.Time.After(h.Last) {
			h.Last = m.Time
		}
		if m.SID != "" && !seen[m.SID] {
			seen[m.SID] = true
			h.SIDs = append(h.SIDs, m.SID)
		}
	}
	return appendFrame(dst, &h, evs, s)
}

// appendFrame writes h (complete), the events and the trailer after dst.
func appendFrame(dst []byte, h *FrameHeader, evs [][]byte, s *Signer) ([]byte, string, error) {
	start := len(dst)
	dst = appendFrameHeader(dst, h)
	dst = append(dst, '\n')
	for _, ev := range evs {
		if bytes.IndexByte(ev, '\n') >= 0 {
			return dst[:start], "", errors.New("events: encode frame: an event contains a newline")
		}
		dst = append(append(dst, ev...), '\n')
	}
	hash := Hash(dst[start:])
	if s != nil {
		sig, err := s.Sign(dst[start:])
		if err != nil {
			return dst[:start], "", err
		}
		dst = append(dst, `{"sig":"`...)
		dst = append(dst, sig...)
		dst = append(dst, `","cert":"`...)
		dst = append(dst, s.certB64...)
		dst = append(dst, `"}`...)
	}
	return dst, hash, nil
}

// FrameHash is the hash of a decoded frame as the next frame's Prev names it.
func (f *Frame) Hash() string { return Hash(f.Signed) }

// ParseCert decodes a certificate as trailers and seals carry it.
func ParseCert(b64 string) (*x509.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("certificate is not base64: %w", err)
	}
	return x509.ParseCertificate(der)
}

// appendFrameHeader writes h as encoding/json would (FrameHeader's field
// order, omitempty honoured), without reflection: the writer makes one per
// frame, and json.Marshal was half the cost of cutting a frame.
func appendFrameHeader(dst []byte, h *FrameHeader) []byte {
	dst = append(dst, `{"tollgate_frame":`...)
	dst = strconv.AppendInt(dst, int64(h.Version), 10)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, h.ID)
	dst = append(dst, `,"src":`...)
	dst = appendJSONString(dst, h.Src)
	dst = append(dst, `,"run":`...)
	dst = appendJSONString(dst, h.Run)
	dst = append(dst, `,"fseq":`...)
	dst = strconv.AppendUint(dst, h.FSeq, 10)
	dst = append(dst, `,"prev":`...)
	dst = appendJSONString(dst, h.Prev)
	dst = append(dst, `,"n":`...)
	dst = strconv.AppendInt(dst, int64(h.N), 10)
	dst = append(dst, `,"first":"`...)
	dst = h.First.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","last":"`...)
	dst = h.Last.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	if len(h.SIDs) > 0 {
		dst = append(dst, `,"sids":[`...)
		for i, sid := range h.SIDs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, sid)
		}
		dst = append(dst, ']')
	}
	if h.StateSeq != 0 {
		dst = append(dst, `,"state_seq":`...)
		dst = strconv.AppendUint(dst, h.StateSeq, 10)
	}
	return append(dst, '}')
}
