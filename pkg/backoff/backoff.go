package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields growing delays between Min and Max with +-20% jitter.
// The zero value uses 100ms and 10s.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the next delay and advances.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 10 * time.Second
	}
	d := lo << min(b.n, 20)
	if d > hi || d <= 0 {
		d = hi
	} else {
		b.n++
	}
	return Jitter(d)
}

// Reset starts again from Min.
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps for the next delay or until ctx ends, returning ctx.Err().
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Jitter spreads d by +-20%.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

// Sleep waits for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
