package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// served is what the proxy read of one formation it serves: its routing
// databag, certificates and ACME challenges.
type served struct {
	Routing    *routingAt // nil: no databag
	Certs      []state.Cert
	Challenges []state.ACMEChallenge
}

// scope keeps, for each formation the proxy serves, a read of the
// formation's own keys and a watch on them (issue 10: a proxy node may read
// only the routing, certificates and challenges of formations whose proxy
// layer selects it, so it cannot watch the whole families). Each
// formation's follower reads, wakes the pass, and watches from the read's
// revision; on any change it reads again. A formation newly selecting the
// node is "permission denied" until the coordinator's access loop grants
// it: the follower retries with backoff, and the pass leaves the formation
// out (or as last read) until then.
type scope struct {
	cli  view.Etcd
	pre  string
	fams []view.Family
	wake func()
	log  *slog.Logger

	mu   sync.Mutex
	data map[string]served
	run  map[string]context.CancelFunc
	wg   sync.WaitGroup
}

func newScope(cli view.Etcd, prefix string, fams []view.Family, wake func(), log *slog.Logger) *scope {
	return &scope{cli: cli, pre: prefix, fams: fams, wake: wake, log: log, data: map[string]served{}, run: map[string]context.CancelFunc{}}
}

// set starts a follower for each formation of want not followed yet and
// stops those of formations no longer in it (forgetting what they read).
func (s *scope) set(ctx context.Context, want map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, cancel := range s.run {
		if !want[f] {
			cancel()
			delete(s.run, f)
			delete(s.data, f)
		}
	}
	for f := range want {
		if _, ok := s.run[f]; ok {
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		s.run[f] = cancel
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.follow(fctx, f) }()
	}
}

// stop ends every follower and waits for them.
func (s *scope) stop() {
	s.mu.Lock()
	for f, cancel := range s.run {
		cancel()
		delete(s.run, f)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// get returns what was last read of f.
func (s *scope) get(f string) (served, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.data[f]
	return d, ok
}

// follow keeps f's read current until ctx ends.
func (s *scope) follow(ctx context.Context, f string) {
	// Capped low: a grant usually follows the layer change within a pass
	// of the access loop.
	bo := backoff.Backoff{Max: 5 * time.Second}
	denied := false
	for ctx.Err() == nil {
		d, rev, err := readServed(ctx, s.cli, s.pre, f, s.fams)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := bo.Next()
			if etcdauth.IsPermissionDenied(err) {
				if !denied {
					s.log.Info("proxy: formation not readable yet (the access loop grants it); retrying", "formation", f, "retry_in", wait)
				}
				denied = true
			} else {
				s.log.Warn("proxy: read formation failed, will retry", "formation", f, "error", err, "retry_in", wait)
			}
			if backoff.Sleep(ctx, wait) != nil {
				return
			}
			continue
		}
		if denied {
			s.log.Info("proxy: formation readable", "formation", f)
			denied = false
		}
		bo.Reset()
		s.mu.Lock()
		if _, ok := s.run[f]; ok { // not stopped meanwhile
			s.data[f] = d
		}
		s.mu.Unlock()
		s.wake()
		if err := s.waitChange(ctx, f, rev+1); err != nil && ctx.Err() == nil {
			s.log.Warn("proxy: watch of formation lost, reading again", "formation", f, "error", err)
			if backoff.Sleep(ctx, bo.Next()) != nil {
				return
			}
		}
	}
}

// waitChange returns nil once a key of f changed at or after rev, or the
// watch's error.
func (s *scope) waitChange(ctx context.Context, f string, rev int64) error {
	ranges, err := view.FormationRanges(s.pre, f, s.fams...)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	merged := make(chan clientv3.WatchResponse, len(ranges))
	for _, r := range ranges {
		opts := []clientv3.OpOption{clientv3.WithRev(rev)}
		if r[len(r)-1] == '/' {
			opts = append(opts, clientv3.WithPrefix())
		}
		wc := s.cli.Watch(wctx, r, opts...)
		go func() {
			for resp := range wc {
				select {
				case merged <- resp:
				case <-wctx.Done():
					return
				}
				if resp.Err() != nil || resp.Canceled {
					return
				}
			}
			select {
			case merged <- clientv3.WatchResponse{Canceled: true}:
			case <-wctx.Done():
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp := <-merged:
			if err := resp.Err(); err != nil {
				return err
			}
			if resp.Canceled {
				return errors.New("watch canceled")
			}
			if len(resp.Events) > 0 {
				return nil
			}
		}
	}
}

// readServed reads f's keys of fams at one revision.
func readServed(ctx context.Context, kv view.Getter, prefix, f string, fams []view.Family) (served, int64, error) {
	st, err := view.LoadFormationFamilies(ctx, kv, prefix, f, fams...)
	if err != nil {
		return served{}, 0, err
	}
	var d served
	if r, ok := st.Routing[f]; ok {
		ra := routingAt{Revision: r.Rev, Doc: r.Doc}
		if r.Err != nil {
			ra.Err = fmt.Errorf("cannot decode: %w", r.Err)
		}
		d.Routing = &ra
	}
	for _, c := range st.CertsOf(f) {
		d.Certs = append(d.Certs, *c)
	}
	for _, c := range st.ChallengesOf(f) {
		d.Challenges = append(d.Challenges, *c)
	}
	return d, st.Rev, nil
}
