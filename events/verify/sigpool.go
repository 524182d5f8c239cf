package verify

import (
	"crypto/sha256"
	"crypto/x509"
	"runtime"
	"sync"

	"github.com/tollgate-db/tollgate/events"
)

// sigCheck is one signature verified off the reading goroutine: an ECDSA
// verification costs as much as reading a hundred events, so they run on
// every core while the reader goes on. Results are taken in order at
// Finish.
type sigCheck struct {
	cert *x509.Certificate
	// data is hashed by the worker (then dropped) unless sum is set.
	data   []byte
	sum    [sha256.Size]byte
	hashed bool
	sig    string
	err    error
	// done reports the result on the checker's goroutine.
	done func(err error)
}

type sigPool struct {
	jobs chan *sigCheck
	wg   sync.WaitGroup
	all  []*sigCheck
}

// verifyLater queues a signature check.
func (c *Checker) verifyLater(j *sigCheck) {
	if c.pool == nil {
		c.pool = &sigPool{jobs: make(chan *sigCheck, 256)}
		for range runtime.GOMAXPROCS(0) {
			go c.pool.work()
		}
	}
	c.pool.all = append(c.pool.all, j)
	c.pool.wg.Add(1)
	c.pool.jobs <- j
}

func (p *sigPool) work() {
	for j := range p.jobs {
		if j.hashed {
			j.err = verifyDigest(j.cert, j.sum[:], j.sig)
		} else {
			j.err = events.VerifySignature(j.cert, j.data, j.sig)
			j.data = nil
		}
		p.wg.Done()
	}
}

// drain waits for the queued checks and reports them in the order they
// were queued; it stops the workers.
func (c *Checker) drain() {
	if c.pool == nil {
		return
	}
	close(c.pool.jobs)
	c.pool.wg.Wait()
	for _, j := range c.pool.all {
		j.done(j.err)
	}
	c.pool = nil
}
