package watch

import (
	"context"
	"time"

	"github.com/deis/deis/pkg/backoff"
)

// Loop is the body of a level-triggered reconcile loop: it runs pass each
// time w is woken (a new Waker starts woken, so the first pass is at once),
// and otherwise resync (with jitter) after a pass that succeeded, or bo's
// next delay after one that failed. It returns when ctx ends. failed, when
// not nil, gets the error of every pass that failed, except when ctx ended.
func Loop(ctx context.Context, w Waker, resync time.Duration, bo backoff.Backoff, pass func(context.Context) error, failed func(error)) {
	timer := time.NewTimer(backoff.Jitter(resync))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w:
		case <-timer.C:
		}
		next := backoff.Jitter(resync)
		if err := pass(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if failed != nil {
				failed(err)
			}
			next = bo.Next()
		} else {
			bo.Reset()
		}
		timer.Reset(next)
	}
}
