package mysql

import (
	"fmt"

	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/events"
)

// LOAD DATA LOCAL INFILE: the statement is gated as its query; the server
// then answers with a request for a file, the client sends the file in
// packets that continue the response's sequence ids and ends it with an
// empty packet, and the server answers with OK or ERR. The data is
// relayed without being recorded; one event names the file and sums it up.

// Error the client gets when a role refuses LOCAL INFILE: the server's own
// code for a disabled LOCAL INFILE, so clients show it the usual way.
const (
	codeLocalInfileRefused  = 1148 // ER_NOT_ALLOWED_COMMAND
	stateLocalInfileRefused = "42000"
)

// infile is a file transfer in progress, between the server's request and
// the client's empty packet.
type infile struct {
	name    string
	seq     uint8 // sequence id of the client's next data packet
	bytes   uint64
	packets uint64
	// cont: the last packet was a full chunk, so an empty one continues
	// it rather than ending the file.
	cont bool
}

// startInfile is called by the server loop before the request reaches the
// client, so the client loop knows what the client's next packets are.
func (p *proxy) startInfile(name string, seq uint8) {
	p.infileMu.Lock()
	p.infile = &infile{name: name, seq: seq + 1}
	p.infileMu.Unlock()
}

// endInfile is called by the server loop when the response ends: a client
// that had not finished the file is recorded as such.
func (p *proxy) endInfile() {
	p.infileMu.Lock()
	f := p.infile
	p.infile = nil
	p.infileMu.Unlock()
	if f != nil {
		_ = p.Sess.Emit(&events.MySQLLocalInfile{
			Status:   events.Status{Success: false, Error: "the database ended the statement before the client ended the file"},
			Filename: f.name, Bytes: f.bytes, Packets: f.packets,
		})
	}
}

// refuseInfile records that a role refused the server's request.
func (p *proxy) refuseInfile(name string) string {
	msg := fmt.Sprintf("tollgate: LOAD DATA LOCAL INFILE is refused by your roles (mysql_local_infile: false): the file %q was not read and the database got an empty one", name)
	_ = p.Sess.Emit(&events.MySQLLocalInfile{Status: events.Status{Success: false, Error: msg}, Filename: name, Refused: true})
	return msg
}

// infileData relays the client's file packets at the start of b. It
// returns the bytes consumed, how many bytes an incomplete packet needs in
// all, and done once the empty packet went out.
func (d *clientDecoder) infileData(b []byte) (consumed, need int, done bool, err error) {
	p := d.p
	p.infileMu.Lock()
	defer p.infileMu.Unlock()
	f := p.infile
	if f == nil {
		return 0, 0, true, nil
	}
	off := 0
	for {
		if len(b)-off < 4 {
			need = 4
			break
		}
		n := int(b[off]) | int(b[off+1])<<8 | int(b[off+2])<<16
		seq := b[off+3]
		if seq != f.seq {
			return off, 0, false, &malformed{reason: fmt.Sprintf("LOCAL INFILE data packet with sequence id %d, expected %d", seq, f.seq),
				length: int64(n), seq: seq, code: codeOutOfOrder,
				message: fmt.Sprintf("tollgate: packets out of order: sequence id %d where %d was expected in the LOCAL INFILE data; the connection is closed", seq, f.seq)}
		}
		if n > d.maxPacket {
			return off, 0, false, &malformed{reason: fmt.Sprintf("LOCAL INFILE data packet of %d bytes is over the limit of %d bytes", n, d.maxPacket),
				length: int64(n), seq: seq, code: codeTooLarge}
		}
		if len(b)-off-4 < n {
			need = 4 + n
			break
		}
		end := n == 0 && !f.cont
		f.seq++
		f.bytes += uint64(n)
		if n > 0 && !f.cont {
			f.packets++
		}
		f.cont = n == wire.MaxChunk
		off += 4 + n
		if end {
			// Recorded before the server can answer, so the result
			// event follows it.
			_ = p.Sess.Emit(&events.MySQLLocalInfile{Status: events.Status{Success: true},
				Filename: f.name, Bytes: f.bytes, Packets: f.packets})
			p.infile = nil
			done = true
			break
		}
	}
	if off > 0 {
		if _, werr := p.Server.Write(b[:off]); werr != nil {
			p.SetReason("database connection lost")
			return off, 0, done, werr
		}
	}
	return off, need, done, nil
}

// infileActive reports whether the client's next packets are file data.
func (p *proxy) infileActive() bool {
	p.infileMu.Lock()
	defer p.infileMu.Unlock()
	return p.infile != nil
}
