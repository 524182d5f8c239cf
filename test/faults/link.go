package faults

import (
	"io"
	"net"
	"sync"
)

// Link is a TCP relay that can be cut: the network between two parts on
// one machine. While cut it closes every connection it carries and every
// new one at once, as a broken network path does to a client that
// reconnects.
type Link struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	done  chan struct{}
}

// NewLink relays connections from a free loopback port to target.
func NewLink(target string) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{ln: ln, target: target, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	go l.accept()
	return l, nil
}

// Addr is host:port of the relay.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Cut closes every connection and refuses new ones until Restore.
func (l *Link) Cut() {
	l.mu.Lock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
}

// Restore lets connections through again.
func (l *Link) Restore() {
	l.mu.Lock()
	l.cut = false
	l.mu.Unlock()
}

// Close stops the relay and closes what it carries.
func (l *Link) Close() {
	l.ln.Close()
	l.Cut()
	<-l.done
}

func (l *Link) accept() {
	defer close(l.done)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.relay(c)
	}
}

func (l *Link) track(cs ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return false
	}
	for _, c := range cs {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *Link) untrack(cs ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		delete(l.conns, c)
		c.Close()
	}
}

func (l *Link) relay(c net.Conn) {
	if !l.track(c) {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		l.untrack(c)
		return
	}
	if !l.track(up) {
		l.untrack(c, up)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(up, c)
		l.untrack(c, up)
	})
	wg.Go(func() {
		_, _ = io.Copy(c, up)
		l.untrack(c, up)
	})
	wg.Wait()
}
