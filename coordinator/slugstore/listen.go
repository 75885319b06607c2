package slugstore

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// sniffTimeout is how long a new connection has to send its first byte.
const sniffTimeout = 10 * time.Second

// SplitTLS shares one listening port between TLS (the slug server, whose
// connections start with a TLS handshake record) and plain HTTP (what may
// stay open without a certificate: /metrics and /healthz). It returns a
// listener of each: the first byte of a connection decides which one
// accepts it. Closing either closes l and ends both.
func SplitTLS(l net.Listener) (tlsL, plainL net.Listener) {
	s := &split{l: l, done: make(chan struct{})}
	tl := &half{s: s, c: make(chan net.Conn)}
	pl := &half{s: s, c: make(chan net.Conn)}
	go s.run(tl, pl)
	return tl, pl
}

type split struct {
	l    net.Listener
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

func (s *split) close(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
		s.l.Close()
	})
}

func (s *split) run(tl, pl *half) {
	for {
		c, err := s.l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			s.close(err)
			return
		}
		go s.classify(c, tl, pl)
	}
}

func (s *split) classify(c net.Conn, tl, pl *half) {
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	to := pl
	if first[0] == 0x16 { // TLS handshake record
		to = tl
	}
	select {
	case to.c <- &peeked{Conn: c, r: br}:
	case <-s.done:
		c.Close()
	}
}

// half is one of SplitTLS's listeners.
type half struct {
	s *split
	c chan net.Conn
}

func (h *half) Accept() (net.Conn, error) {
	select {
	case c := <-h.c:
		return c, nil
	case <-h.s.done:
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		if h.s.err != nil {
			return nil, h.s.err
		}
		return nil, net.ErrClosed
	}
}

func (h *half) Close() error   { h.s.close(nil); return nil }
func (h *half) Addr() net.Addr { return h.s.l.Addr() }

// peeked is a connection whose first bytes were read into r.
type peeked struct {
	net.Conn
	r *bufio.Reader
}

func (p *peeked) Read(b []byte) (int, error) { return p.r.Read(b) }
