package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/events"
)

// clientBuffer is the relay's client read buffer, which the first command
// is read into too.
const clientBuffer = agent.ClientBuffer

// pending is a command the client is owed a reply for, in the order the
// client sent them: one Redis answers (forwarded) or one the agent gives
// itself (local).
type pending struct {
	name string
	at   time.Time
	// local is the agent's own reply; the command was not forwarded.
	local    []byte
	localErr string
	// refused: the store could not take the command's event; Session.Refused
	// recorded the refusal, so the reply gets no result event of its own.
	refused bool
	// replace is given to the client instead of Redis's reply (an EXEC
	// the agent turned into DISCARD).
	replace []byte
	// selectDB is the database a SELECT switches to on success.
	selectDB string
	// hello is the protocol version a HELLO asks for.
	hello int
	// subKind and subLeft: the (un)subscribe confirmations the command
	// is answered with, one per channel.
	subKind string
	subLeft int
	monitor bool
}

// proxy is one established session: the client loop decodes and gates
// commands, the server loop follows the replies.
type proxy struct {
	agent.Relay
	e *Engine
	// client is who the session is for.
	client *agent.ClientConn
	dbUser string

	// qmu guards the queue of commands owed a reply and every write to
	// the client, so that the agent's own replies take their place among
	// Redis's and never overtake them.
	qmu    sync.Mutex
	idle   *sync.Cond
	queue  []*pending
	closed bool

	// The server loop's view of the connection.
	out        outBuilder
	sc         ReplyScanner
	proto      int   // RESP version, 2 until a HELLO 3 succeeds
	subs       int64 // subscriptions, as Redis last counted them
	monitoring bool
	suppress   bool
	suppressAt int

	// The client loop's view of a transaction: a command refused by the
	// agent inside MULTI makes EXEC a DISCARD, as Redis aborts a
	// transaction with a command it refused to queue.
	inMulti, dirty bool
}

func newProxy(e *Engine, sess *agent.Session, c *agent.ClientConn, dbUser string) *proxy {
	p := &proxy{Relay: agent.Relay{Tally: agent.Tally{Started: time.Now()}, Sess: sess, Client: c}, e: e, client: c, dbUser: dbUser, proto: 2}
	p.idle = sync.NewCond(&p.qmu)
	p.Codec, p.Queue = p, replies{p}
	return p
}

// bind sets the database connection once it is up; before the lifecycle
// may call Terminate.
func (p *proxy) bind(server net.Conn) { p.Server = server }

// Termination writes the error itself, in its place among the replies.
func (p *proxy) Termination(_, message string) []byte {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	if !p.sc.Pending() {
		_ = p.WriteClient(AppendError(nil, "ERR tollgate: "+message))
	}
	return nil
}

// replies is the relay's view of the commands owed a reply.
type replies struct{ p *proxy }

// Answered: the server loop pops what Redis answered itself.
func (replies) Answered(uint64) {}

// WaitIdle waits until every command sent has its reply, so that the
// agent's last words come after Redis's; at most for a few seconds, as a
// blocking command or MONITOR may never be answered.
func (r replies) WaitIdle() { r.p.waitIdle(5 * time.Second) }

// Close ends the waits: the server stream stopped.
func (r replies) Close() {
	r.p.qmu.Lock()
	r.p.closed = true
	r.p.idle.Broadcast()
	r.p.qmu.Unlock()
}

func (p *proxy) run(ctx context.Context, first []byte) error { return p.Run(ctx, first, p.Server) }

// Decode handles a read's complete commands: decoded and gated as one
// batch, and only then forwarded.
func (p *proxy) Decode(ctx context.Context, b []byte) (consumed, need int, err error) {
	consumed, need, err = p.process(ctx, b)
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return consumed, 0, p.malformed(pe.Error(), b[consumed:])
	}
	return consumed, need, err
}

// ClientClosed: a client that leaves inside a command sent a truncated
// one.
func (p *proxy) ClientClosed(err error, rest []byte) *agent.Malformed {
	if len(rest) > 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return p.malformed(fmt.Sprintf("truncated: the client closed the connection %d bytes into a command", len(rest)), rest)
	}
	return nil
}

// batch is what one read's commands make: their events, the bytes that go
// to Redis, and the replies owed.
type batch struct {
	b       []byte
	evs     []events.Event
	entries []*pending
	// The forwarded bytes are b[from:to] while direct; out once a command
	// was rewritten or held back.
	direct     bool
	from, to   int
	out        []byte
	statements uint64
	// multi state before the batch, restored when it is refused.
	inMulti, dirty bool
}

func (d *batch) forwardRaw(off, size int) {
	if d.direct && (d.to == d.from || d.to == off) {
		if d.to == d.from {
			d.from = off
		}
		d.to = off + size
		return
	}
	d.materialize()
	d.out = append(d.out, d.b[off:off+size]...)
}

func (d *batch) forwardArgs(args [][]byte) {
	d.materialize()
	d.out = AppendCommand(d.out, args...)
}

func (d *batch) materialize() {
	if d.direct {
		d.out = append(d.out[:0], d.b[d.from:d.to]...)
		d.direct = false
	}
}

// process handles the complete commands at the start of b. It returns how
// many bytes it consumed and, when the next command is incomplete, how
// many bytes that command needs at least, counted from its start (the
// caller moves it to the buffer's start).
func (p *proxy) process(ctx context.Context, b []byte) (consumed, need int, err error) {
	d := &batch{b: b, direct: true, inMulti: p.inMulti, dirty: p.dirty}
	off := 0
	for {
		cmd, size, nd, perr := ParseCommand(b[off:], p.e.opt.Limits)
		if perr != nil {
			// The commands before the bad one are whole and go on; the
			// bad one closes the connection.
			if err := p.flush(ctx, d); err != nil {
				return off, 0, err
			}
			return off, 0, perr
		}
		if size == 0 {
			need = nd
			break
		}
		if len(cmd.Args) > 0 {
			p.command(d, off, size, cmd)
		}
		off += size
	}
	if err := p.flush(ctx, d); err != nil {
		return off, 0, err
	}
	return off, need, nil
}

// command decodes one command into the batch: an event, and either bytes
// for Redis or the agent's own reply.
func (p *proxy) command(d *batch, off, size int, cmd Command) {
	args := cmd.Args
	name := commandName(args)
	text, redacted := render(args, secretArgs(name, args), p.e.opt.MaxArg)
	d.evs = append(d.evs, &events.Query{Query: text, Redacted: redacted})
	e := &pending{name: name}
	d.entries = append(d.entries, e)
	forward := func() {
		d.statements++
		if cmd.Inline {
			d.forwardArgs(args)
		} else {
			d.forwardRaw(off, size)
		}
	}
	refuse := func(code, msg string) {
		e.local = AppendError(nil, code+" tollgate: "+msg)
		e.localErr = code
		if p.inMulti {
			p.dirty = true
		}
	}
	switch name {
	case "AUTH":
		u, ok := namedUser(args)
		switch {
		case !ok:
			refuse("ERR", "wrong number of arguments for 'auth' command")
		case u != p.dbUser:
			refuse("WRONGPASS", fmt.Sprintf("this session is signed in as db user %q; AUTH as %q is refused (connect again as that db user)", p.dbUser, u))
		default:
			// Already signed in as that user by the agent: the
			// password is neither checked nor forwarded.
			e.local = []byte("+OK\r\n")
		}
		return
	case "HELLO":
		out := [][]byte{args[0]}
		for i := 1; i < len(args); i++ {
			a := args[i]
			switch {
			case i == 1:
				v, err := strconv.Atoi(string(a))
				if err == nil {
					e.hello = v
				}
				out = append(out, a)
			case strings.EqualFold(string(a), "AUTH") && i+2 < len(args):
				if u := string(args[i+1]); u != p.dbUser {
					refuse("WRONGPASS", fmt.Sprintf("this session is signed in as db user %q; HELLO ... AUTH as %q is refused (connect again as that db user)", p.dbUser, u))
					return
				}
				i += 2
			default:
				out = append(out, a)
			}
		}
		d.statements++
		if len(out) != len(args) {
			d.forwardArgs(out)
		} else if cmd.Inline {
			d.forwardArgs(args)
		} else {
			d.forwardRaw(off, size)
		}
		return
	case "SELECT", "SWAPDB", "MOVE", "COPY":
		for _, db := range dbArgs(name, args) {
			if msg, ok := p.allowDB(string(db)); !ok {
				refuse("NOPERM", msg)
				return
			}
		}
		if name == "SELECT" && len(args) == 2 {
			e.selectDB = string(args[1])
		}
	case "MONITOR":
		if !p.monitorAllowed() {
			refuse("NOPERM", "MONITOR is refused: it streams every client's commands, which no role of this session allows (role option redis_monitor)")
			return
		}
		e.monitor = true
	case "RESET":
		// RESET signs the connection back in as Redis's default user,
		// which would leave the db user the session was allowed.
		refuse("NOPERM", "RESET is refused: it would sign the connection in as Redis's default user; reconnect instead")
		return
	case "CLIENT":
		// Without replies the agent could not pair commands with their
		// results, nor place its own answers among Redis's.
		if len(args) > 2 && strings.EqualFold(string(args[1]), "REPLY") && !strings.EqualFold(string(args[2]), "ON") {
			refuse("ERR", "CLIENT REPLY "+strings.ToUpper(string(args[2]))+" is refused: the agent pairs every command with its reply")
			return
		}
	case "SYNC", "PSYNC":
		// A replica's stream is an RDB file and the write stream of
		// every client, not replies this session's audit could follow.
		refuse("NOPERM", name+" is refused: replication does not go through Tollgate")
		return
	case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE":
		e.subKind = strings.ToLower(name)
		e.subLeft = max(len(args)-1, 1)
	case "MULTI":
		p.inMulti, p.dirty = true, false
	case "EXEC":
		dirty := p.dirty
		p.inMulti, p.dirty = false, false
		if dirty {
			d.statements++
			d.forwardArgs([][]byte{[]byte("DISCARD")})
			e.replace = AppendError(nil, "EXECABORT Transaction discarded because of previous errors.")
			return
		}
	case "DISCARD":
		p.inMulti, p.dirty = false, false
	}
	forward()
}

// dbArgs are the database numbers command name names, each checked
// against db_names: SELECT n, SWAPDB a b, MOVE key n and COPY ... DB n. A
// command of the wrong arity names none; Redis refuses it.
func dbArgs(name string, args [][]byte) [][]byte {
	switch name {
	case "SELECT":
		if len(args) == 2 {
			return args[1:2]
		}
	case "SWAPDB":
		return args[1:min(len(args), 3)]
	case "MOVE":
		if len(args) == 3 {
			return args[2:3]
		}
	case "COPY":
		var dbs [][]byte
		for i := 3; i+1 < len(args); i++ {
			if strings.EqualFold(string(args[i]), "DB") {
				dbs = append(dbs, args[i+1])
			}
		}
		return dbs
	}
	return nil
}

// allowDB checks a database number against the session's db_names.
func (p *proxy) allowDB(db string) (string, bool) {
	c := p.client
	dec := c.Env.Authorize(c.Identity, c.Database.Info(), p.dbUser, db)
	if dec.Allowed {
		return "", true
	}
	return agent.Denial(c.Identity.User, c.Database.Config.Name, p.dbUser, db, dec) + "; it was not sent to the database", false
}

// monitorAllowed: MONITOR shows every client's commands, not only this
// session's, so it needs a role's redis_monitor: true.
func (p *proxy) monitorAllowed() bool { return p.Sess.Options.RedisMonitor }

// flush gates the batch's events and forwards its bytes, or refuses every
// command of it when the store cannot take the events.
func (p *proxy) flush(ctx context.Context, d *batch) error {
	if len(d.entries) == 0 {
		return nil
	}
	if err := p.Sess.Gate(ctx, d.evs...); err != nil {
		var ae *agent.AuditError
		if !errors.As(err, &ae) {
			return err
		}
		return p.refuse(d, ae)
	}
	now := time.Now()
	for _, e := range d.entries {
		e.at = now
	}
	p.qmu.Lock()
	p.queue = append(p.queue, d.entries...)
	p.writeLocalsLocked(nil)
	p.qmu.Unlock()
	p.Statements.Add(d.statements)
	out := d.out
	if d.direct {
		out = d.b[d.from:d.to]
	}
	if len(out) > 0 {
		if _, err := p.Server.Write(out); err != nil {
			p.SetReason("database connection lost")
			return err
		}
	}
	return nil
}

// refuse answers a batch whose events the store did not take: nothing of
// it reaches Redis and every command gets the agent's error, recorded
// once the store is back.
func (p *proxy) refuse(d *batch, ae *agent.AuditError) error {
	msg := "ERR tollgate: " + ae.Error() + "; the command was not sent to the database"
	p.Sess.Refused(&events.Result{Status: events.Status{Error: msg}, ErrorCode: "ERR", ErrorMessage: msg})
	p.Errors.Add(1)
	p.inMulti, p.dirty = d.inMulti, d.dirty
	if p.inMulti {
		// Redis's transaction misses the refused commands: it must not
		// run.
		p.dirty = true
	}
	reply := AppendError(nil, msg)
	for _, e := range d.entries {
		*e = pending{name: e.name, local: reply, localErr: "ERR", refused: true}
	}
	p.qmu.Lock()
	p.queue = append(p.queue, d.entries...)
	p.writeLocalsLocked(nil)
	p.qmu.Unlock()
	return nil
}

// writeLocalsLocked gives the client the agent's own replies now at the
// head of the queue: into o when the server loop is building its output,
// else straight to the client. qmu held.
func (p *proxy) writeLocalsLocked(o *outBuilder) {
	var direct []byte
	for len(p.queue) > 0 && p.queue[0].local != nil {
		e := p.queue[0]
		p.pop()
		if o != nil {
			o.inject(e.local)
		} else {
			direct = append(direct, e.local...)
		}
		if !e.refused {
			ev := &events.Result{Status: events.Status{Success: e.localErr == ""}, CommandTag: e.name, Bytes: uint64(len(e.local))}
			if e.localErr != "" {
				p.Errors.Add(1)
				ev.ErrorCode = e.localErr
				ev.ErrorMessage = strings.TrimSuffix(string(e.local[1:]), "\r\n")
				ev.Error = ev.ErrorMessage
			}
			_ = p.Sess.Emit(ev)
		}
	}
	if len(direct) > 0 {
		_ = p.WriteClient(direct)
	}
}

func (p *proxy) pop() {
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = nil
		p.idle.Broadcast()
	}
}

// waitIdle blocks until every command sent has its reply, so that the
// agent's last words come after Redis's; at most for limit, as a blocking
// command or MONITOR may never be answered.
func (p *proxy) waitIdle(limit time.Duration) {
	timedOut := false
	t := time.AfterFunc(limit, func() {
		p.qmu.Lock()
		timedOut = true
		p.idle.Broadcast()
		p.qmu.Unlock()
	})
	defer t.Stop()
	p.qmu.Lock()
	for len(p.queue) > 0 && !p.closed && !timedOut {
		p.idle.Wait()
	}
	p.qmu.Unlock()
}

// malformed is bad client input: recorded, answered after Redis's
// replies to what was sent before, and not forwarded.
func (p *proxy) malformed(reason string, rest []byte) *agent.Malformed {
	return &agent.Malformed{Event: malformedEvent(reason, int64(len(rest)), rest), Ending: "malformed client command: " + reason,
		Wait: true, Reply: AppendError(nil, "ERR "+reason+"; tollgate closed the connection and forwarded nothing of it"), Err: errors.New(reason)}
}

// outBuilder is a server read as the client gets it: the read itself,
// unless replies were held back or the agent's own put between them.
type outBuilder struct {
	b       []byte
	out     []byte
	last    int
	changed bool
	pos     int // where in b the builder stands (the end of the last reply)
}

func (o *outBuilder) upTo(at int) {
	if !o.changed {
		o.out = append(o.out[:0], o.b[:at]...)
		o.changed = true
	} else {
		o.out = append(o.out, o.b[o.last:at]...)
	}
	o.last = at
}

func (o *outBuilder) inject(x []byte) {
	o.upTo(o.pos)
	o.out = append(o.out, x...)
}

func (o *outBuilder) skip(from, to int) {
	o.upTo(from)
	o.last = to
}

func (o *outBuilder) result() []byte {
	if !o.changed {
		return o.b
	}
	return append(o.out, o.b[o.last:]...)
}

// Scan follows a read of Redis's replies, pairing each with its command
// to record its result. It writes the read itself, with the agent's own
// replies in their place, under the queue's lock.
func (p *proxy) Scan(b []byte) ([]byte, uint64, error) {
	if serr := p.serverRead(&p.out, b); serr != nil {
		return nil, 0, &agent.Malformed{Event: &events.MalformedPacket{Direction: "server", Reason: serr.Error(), Length: int64(len(b))},
			Ending: "malformed reply from the database: " + serr.Error(), Err: serr}
	}
	return nil, 0, nil
}

func (p *proxy) serverRead(o *outBuilder, b []byte) error {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	*o = outBuilder{b: b, out: o.out[:0]}
	if p.suppress {
		p.suppressAt = 0
	}
	var bad error
	err := p.sc.Feed(b, func(start, end int, r *Reply) {
		if bad == nil {
			bad = p.reply(o, start, end, r)
		}
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return err
	}
	if p.sc.Pending() && !p.suppress {
		// A reply Redis has only begun: hold it back now if it is owed
		// to a command whose reply the agent replaces.
		if h := p.head(); h != nil && h.replace != nil {
			p.suppress, p.suppressAt = true, o.pos
		}
	}
	if p.suppress {
		o.skip(p.suppressAt, len(b))
	}
	if werr := p.WriteClient(o.result()); werr != nil {
		return agent.ErrClientLost
	}
	return nil
}

func (p *proxy) head() *pending {
	if len(p.queue) == 0 {
		return nil
	}
	return p.queue[0]
}

// isConfirm reports whether kind is a pub/sub (un)subscribe confirmation.
func isConfirm(kind string) bool {
	switch kind {
	case "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe":
		return true
	}
	return false
}

func isMessage(kind string) bool {
	return kind == "message" || kind == "pmessage" || kind == "smessage" || kind == "pong"
}

// reply pairs one complete reply with its command. Pub/sub messages,
// RESP3 pushes and MONITOR's stream answer no command: they are relayed.
func (p *proxy) reply(o *outBuilder, start, end int, r *Reply) error {
	h := p.head()
	if p.suppress {
		o.skip(p.suppressAt, end)
		p.suppress = false
	} else if start >= 0 && h != nil && h.replace != nil {
		o.skip(start, end)
	}
	o.pos = end
	kind := ""
	if (r.Type == '>' || r.Type == '*') && len(r.Head) > 0 {
		kind = strings.ToLower(r.Head[0])
	}
	if isConfirm(kind) && (r.Type == '>' || p.subs > 0 || (h != nil && h.subKind == kind)) {
		if len(r.Head) >= 3 {
			if n, err := strconv.ParseInt(r.Head[2], 10, 64); err == nil {
				p.subs = n
			}
		}
		if h != nil && h.subKind == kind && h.subLeft > 0 {
			h.subLeft--
			if h.subLeft == 0 {
				p.pop()
				p.finish(h, r)
				p.writeLocalsLocked(o)
			}
		}
		return nil
	}
	if r.Type == '>' || p.monitoring || (p.proto == 2 && p.subs > 0 && r.Type == '*' && isMessage(kind) && (h == nil || kind != "pong")) {
		return nil
	}
	if h == nil {
		return fmt.Errorf("%d-byte reply from the database with no command awaiting it", r.Bytes)
	}
	p.pop()
	if h.replace != nil {
		o.inject(h.replace)
	}
	p.finish(h, r)
	p.writeLocalsLocked(o)
	return nil
}

// finish records a command's result and follows what it changed.
func (p *proxy) finish(e *pending, r *Reply) {
	failed := r.Type == '-' || r.Type == '!'
	if e.replace != nil {
		failed = true
		r = &Reply{Type: '-', Err: strings.TrimSuffix(string(e.replace[1:]), "\r\n"), Bytes: int64(len(e.replace))}
	}
	ev := &events.Result{
		Status:     events.Status{Success: !failed},
		CommandTag: e.name + " " + summary(r),
		Bytes:      uint64(r.Bytes),
		DurationNs: time.Since(e.at).Nanoseconds(),
	}
	switch {
	case r.Type == '$' || r.Type == '=':
		if r.Elems >= 0 {
			ev.Rows = 1
		}
	case r.Elems > 0:
		ev.Rows = uint64(r.Elems)
	}
	if failed {
		p.Errors.Add(1)
		ev.ErrorCode, _, _ = strings.Cut(r.Err, " ")
		ev.ErrorMessage = r.Err
		ev.Error = r.Err
	} else {
		switch {
		case e.selectDB != "":
			p.Sess.SetDB(p.dbUser, e.selectDB)
		case e.hello != 0:
			p.proto = e.hello
		case e.monitor:
			p.monitoring = true
		}
	}
	p.Rows.Add(ev.Rows)
	_ = p.Sess.Emit(ev)
}

// summary describes a reply in a few words: its RESP type and size.
func summary(r *Reply) string {
	switch r.Type {
	case '+':
		return "simple"
	case '-', '!':
		return "error"
	case ':':
		return "integer"
	case '$', '=':
		if r.Elems < 0 {
			return "nil"
		}
		return "bulk"
	case '*', '~', '%', '>':
		if r.Elems < 0 {
			return "nil"
		}
		what := map[byte]string{'*': "array", '~': "set", '%': "map", '>': "push"}[r.Type]
		return what + " " + strconv.FormatInt(r.Elems, 10)
	case '_':
		return "null"
	case '#':
		return "boolean"
	case ',':
		return "double"
	case '(':
		return "bignum"
	}
	return string(r.Type)
}
