package watch

import (
	"context"
	"strings"

	"github.com/deis/deis/pkg/backoff"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Waker is a coalescing wake-up signal: many Wake calls before one receive
// count as one.
type Waker chan struct{}

// NewWaker returns a waker that starts out signalled, so a loop runs once at
// start.
func NewWaker() Waker {
	w := make(Waker, 1)
	w <- struct{}{}
	return w
}

// Wake signals the waker without blocking.
func (w Waker) Wake() {
	select {
	case w <- struct{}{}:
	default:
	}
}

// Prefixes watches every prefix (ending in "/"; other keys exactly) from revision fromRev+1 (0: from now) and
// wakes w on every change, until ctx ends. On compaction or a broken stream it
// wakes w (so the loop resyncs by reading again) and resumes from the current
// revision.
func Prefixes(ctx context.Context, c clientv3.Watcher, fromRev int64, w Waker, prefixes ...string) {
	for _, p := range prefixes {
		go prefix(ctx, c, p, fromRev, w)
	}
}

func prefix(ctx context.Context, c clientv3.Watcher, p string, fromRev int64, w Waker) {
	var bo backoff.Backoff
	for ctx.Err() == nil {
		// A prefix ends in "/"; anything else is one key, watched alone:
		// a reader may be allowed that key and not its neighbours (a node
		// reads /deis/runtime/<node>, not /deis/runtime/<node>-b).
		var opts []clientv3.OpOption
		if strings.HasSuffix(p, "/") {
			opts = append(opts, clientv3.WithPrefix())
		}
		if fromRev > 0 {
			opts = append(opts, clientv3.WithRev(fromRev+1))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range c.Watch(wctx, p, opts...) {
			if err := resp.Err(); err != nil {
				break
			}
			bo.Reset()
			fromRev = resp.Header.Revision
			if len(resp.Events) > 0 {
				w.Wake()
			}
		}
		cancel()
		// The stream ended: compaction, lost leader or ctx. Resync from now.
		fromRev = 0
		w.Wake()
		if bo.Wait(ctx) != nil {
			return
		}
	}
}
