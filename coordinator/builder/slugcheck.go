package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
)

// slugError is the reason a slug was refused by slugtar.Check: the nodes
// would refuse to extract it (a tar bomb, too many entries, a device or a
// path outside the slug).
type slugError struct{ err error }

func (e *slugError) Error() string {
	return "builder: " + strings.TrimPrefix(e.err.Error(), "slugtar: ")
}

func (e *slugError) Unwrap() error { return e.err }

// errCheckStopped ends the slug check when the store stops reading.
var errCheckStopped = errors.New("the slug store stopped reading")

// slugLimits are the extraction limits of the agents, which take the same
// --max-slug-bytes and --max-slug-entries.
func (b *Builder) slugLimits() slugtar.Limits {
	return slugtar.LimitsFor(b.cfg.MaxSlugBytes, b.cfg.MaxSlugEntries)
}

// putChecked streams the slug r into the slug store while slugtar.Check
// reads the same bytes, in one pass: the store keeps the slug only when the
// check passed to the end, and a slug the nodes would refuse fails with a
// *slugError.
func (b *Builder) putChecked(ctx context.Context, r io.Reader) (state.SlugRef, error) {
	pr, pw := io.Pipe()
	c := &checkedReader{r: r, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		err := slugtar.Check(ctx, pr, b.slugLimits())
		if err == nil {
			// what follows the tar trailer (gzip's end, padding)
			_, err = io.Copy(io.Discard, pr)
		}
		switch {
		case err == nil, errors.Is(err, errCheckStopped):
		case ctx.Err() != nil:
			c.err = ctx.Err()
		default:
			c.err = &slugError{err: err}
		}
		// a write of the rest fails with the reason (nil: io.EOF)
		pr.CloseWithError(c.err)
	}()
	ref, err := b.cfg.Slugs.Put(c)
	pw.CloseWithError(errCheckStopped) // no-op after the end of the slug
	<-c.done
	if c.err != nil {
		if err == nil {
			// cannot happen: Put saw the error at the end of the stream
			return state.SlugRef{}, fmt.Errorf("builder: the slug was stored before its check ended: %w", c.err)
		}
		return state.SlugRef{}, c.err
	}
	return ref, err
}

// checkedReader passes r on and copies what it reads into pw; at the end
// of r it waits for the check and returns its error instead of io.EOF when
// it failed.
type checkedReader struct {
	r    io.Reader
	pw   *io.PipeWriter
	done chan struct{}
	err  error // set before done closes
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		if _, werr := c.pw.Write(p[:n]); werr != nil {
			<-c.done
			if c.err != nil {
				return 0, c.err
			}
			return 0, werr
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		c.pw.Close()
		<-c.done
		if c.err != nil {
			return 0, c.err
		}
	case err != nil:
		c.pw.CloseWithError(errCheckStopped) // the store fails with err
	}
	return n, err
}
