package builder

import (
	"fmt"
	"io"
	"net/http"
	"sync"
)

// console writes whole lines to the pusher (flushing each) and to the build
// log. It is safe for concurrent use. Errors writing to the pusher are
// remembered but do not stop the build: the log still gets every line.
type console struct {
	mu      sync.Mutex
	out     io.Writer
	log     io.Writer
	partial []byte
	afterCR bool
}

const maxLine = 64 << 10

func newConsole(out, log io.Writer) *console { return &console{out: out, log: log} }

// Printf writes one line.
func (c *console) Printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.emit([]byte(line))
}

// Write splits p into lines at "\n", "\r\n" or a lone "\r" (progress
// bars); a trailing partial line waits for its end (or for Flush).
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range p {
		switch {
		case b == '\n' && c.afterCR:
			// the second half of "\r\n": the line already ended
		case b == '\n' || b == '\r':
			c.emit(c.partial)
			c.partial = c.partial[:0]
		default:
			c.partial = append(c.partial, b)
			if len(c.partial) >= maxLine { // cut a very long line rather than buffer it forever
				c.emit(c.partial)
				c.partial = c.partial[:0]
			}
		}
		c.afterCR = b == '\r'
	}
	return len(p), nil
}

// Flush writes a pending partial line.
func (c *console) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.emit(c.partial)
		c.partial = c.partial[:0]
	}
}

func (c *console) emit(line []byte) {
	b := make([]byte, 0, len(line)+1)
	b = append(append(b, line...), '\n')
	if c.log != nil {
		c.log.Write(b)
	}
	if c.out != nil {
		c.out.Write(b)
		if f, ok := c.out.(http.Flusher); ok {
			f.Flush()
		}
	}
}
