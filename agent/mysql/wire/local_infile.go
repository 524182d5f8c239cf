package wire

// LocalInfileRequest is the server's answer to LOAD DATA LOCAL INFILE: in
// place of a result set it names the client file it wants. The client
// then sends the file's contents in packets whose sequence ids continue
// the response's, ends them with an empty packet, and the server answers
// with OK or ERR.
type LocalInfileRequest struct {
	// Filename is the name as the statement wrote it; the server never
	// reads it, so it may be any bytes.
	Filename string
}

// Decode parses a LOCAL INFILE request payload.
func (r *LocalInfileRequest) Decode(src []byte) error {
	*r = LocalInfileRequest{}
	if len(src) == 0 || src[0] != LocalInfile {
		if len(src) == 0 {
			return malformed("empty LOCAL INFILE request")
		}
		return malformed("LOCAL INFILE request header 0x%02x, want 0xfb", src[0])
	}
	r.Filename = string(src[1:])
	return nil
}

// Encode appends the request's payload to dst.
func (r *LocalInfileRequest) Encode(dst []byte) []byte {
	dst = append(dst, LocalInfile)
	return append(dst, r.Filename...)
}

// IsLocalInfileRequest reports whether a response's first payload is a
// LOCAL INFILE request. A length-encoded column count never starts with
// 0xfb (that byte means NULL there), so the header alone decides.
func IsLocalInfileRequest(p []byte) bool { return len(p) > 0 && p[0] == LocalInfile }
