package access

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Syncer keeps etcd's users and roles in step with the platform's records.
type Syncer struct {
	// Root is a client authenticated as etcd's root.
	Root   *clientv3.Client
	Prefix string
	Log    *slog.Logger
	// Resync is how often a pass runs without a change (0: a minute).
	Resync time.Duration
	// Lock is shared with this coordinator's JoinServer (see there).
	Lock *sync.Mutex
}

// Election is the key of the access loop's own election: one coordinator
// at a time runs it.
func Election(prefix string) string {
	return state.NewKeys(prefix).Prefix + "/coordinator/access-election"
}

// Run campaigns and, while elected, runs the loop, until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	host, _ := os.Hostname()
	var bo backoff.Backoff
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.Root, concurrency.WithTTL(10), concurrency.WithContext(ctx))
		if err != nil {
			s.Log.Warn("access election session failed", "error", err)
			_ = bo.Wait(ctx)
			continue
		}
		el := concurrency.NewElection(sess, Election(s.Prefix))
		if err := el.Campaign(ctx, fmt.Sprintf("%s/%d", host, os.Getpid())); err != nil {
			sess.Close()
			if ctx.Err() == nil {
				s.Log.Warn("access election failed", "error", err)
				_ = bo.Wait(ctx)
			}
			continue
		}
		bo.Reset()
		s.Log.Info("access loop running")
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
			case <-lctx.Done():
			}
			cancel()
		}()
		s.loop(lctx)
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = el.Resign(rctx)
		rcancel()
		sess.Close()
	}
	return nil
}

func (s *Syncer) loop(ctx context.Context) {
	k := state.NewKeys(s.Prefix)
	w := watch.NewWaker()
	watch.Prefixes(ctx, s.Root, 0, w, jointoken.Members(s.Prefix), jointoken.Revocations(s.Prefix),
		k.Users(), k.AllPerms(), k.Formations(), k.AllLayers(), k.Heartbeats())
	resync := s.Resync
	if resync <= 0 {
		resync = time.Minute
	}
	watch.Loop(ctx, w, resync, backoff.Backoff{}, s.Pass, func(err error) { s.Log.Warn("access sync failed", "error", err) })
}

// Desired reads the records and returns what etcd's users and roles should
// be. Records naming an invalid node, user or formation are skipped.
func (s *Syncer) Desired(ctx context.Context) (etcdauth.Desired, error) {
	k := state.NewKeys(s.Prefix)
	formations, err := FormationNames(ctx, s.Root, s.Prefix)
	if err != nil {
		return etcdauth.Desired{}, err
	}
	exists := map[string]bool{}
	for _, f := range formations {
		exists[f] = true
	}
	layers, err := Layers(ctx, s.Root, s.Prefix)
	if err != nil {
		return etcdauth.Desired{}, err
	}
	d := etcdauth.Desired{Nodes: map[string]etcdauth.NodeOptions{}, Users: map[string]etcdauth.UserGrants{}, Formations: formations,
		// a join on another coordinator writes the record, then makes the
		// user: asked again before a user is deleted, so a pass that read
		// the records just before cannot delete it
		NodeJoined: func(ctx context.Context, node string) (bool, error) {
			resp, err := s.Root.Get(ctx, jointoken.MemberKey(s.Prefix, node), clientv3.WithCountOnly())
			if err != nil {
				return false, err
			}
			return resp.Count > 0, nil
		}}
	members, _, err := state.List[jointoken.Member](ctx, s.Root, jointoken.Members(s.Prefix))
	if err != nil {
		return d, err
	}
	for _, m := range members {
		n := strings.TrimPrefix(m.Key, jointoken.Members(s.Prefix))
		if state.ValidateName("node", n) != nil {
			continue
		}
		d.Nodes[n] = NodeOptions(n, m.Value.Labels, formations, layers)
	}
	users, _, err := state.List[state.User](ctx, s.Root, k.Users())
	if err != nil {
		return d, err
	}
	for _, u := range users {
		n := strings.TrimPrefix(u.Key, k.Users())
		if state.ValidateName("user", n) != nil {
			continue
		}
		d.Users[n] = etcdauth.UserGrants{Admin: u.Value.Admin}
	}
	perms, _, err := state.List[state.Perm](ctx, s.Root, k.AllPerms())
	if err != nil {
		return d, err
	}
	for _, p := range perms {
		f, u, ok := strings.Cut(strings.TrimPrefix(p.Key, k.AllPerms()), "/")
		g, known := d.Users[u]
		if !ok || !known || !exists[f] {
			continue
		}
		g.Formations = append(g.Formations, f)
		d.Users[u] = g
	}
	return d, nil
}

// Pass runs one sync: etcd users and roles, then revoked nodes' heartbeats.
func (s *Syncer) Pass(ctx context.Context) error {
	if s.Lock != nil {
		s.Lock.Lock()
		defer s.Lock.Unlock()
	}
	d, err := s.Desired(ctx)
	if err != nil {
		return err
	}
	if err := etcdauth.Sync(ctx, s.Root, s.Prefix, d); err != nil {
		return err
	}
	return s.evict(ctx, d)
}

// evict takes nodes whose certificate was revoked, and that have not joined
// again, off the cluster: their heartbeat key goes (with its lease), so the
// scheduler treats them as lost and re-places their containers; their etcd
// user is already gone, so they cannot write it again.
func (s *Syncer) evict(ctx context.Context, d etcdauth.Desired) error {
	k := state.NewKeys(s.Prefix)
	revs, _, err := state.List[jointoken.Revocation](ctx, s.Root, jointoken.Revocations(s.Prefix))
	if err != nil {
		return err
	}
	for _, r := range revs {
		n := r.Value.Node
		if n == "" || state.ValidateName("node", n) != nil {
			continue
		}
		if _, ok := d.Nodes[n]; ok {
			continue
		}
		resp, err := s.Root.Get(ctx, k.Heartbeat(n))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if kv.Lease != 0 {
				if _, err := s.Root.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
					s.Log.Warn("revoke a removed node's heartbeat lease", "node", n, "error", err)
				}
			}
			if _, err := s.Root.Delete(ctx, k.Heartbeat(n)); err != nil {
				return err
			}
			s.Log.Info("removed node evicted: its heartbeat is gone, its containers move", "node", n)
		}
	}
	return nil
}

// WatchRevoked keeps revoked in step with the revocation records, for the
// platform's own TLS servers (slug server, agent API), until ctx ends.
func WatchRevoked(ctx context.Context, c *clientv3.Client, prefix string, revoked *pki.Revoked, log *slog.Logger) {
	w := watch.NewWaker()
	watch.Prefixes(ctx, c, 0, w, jointoken.Revocations(prefix))
	watch.Loop(ctx, w, time.Minute, backoff.Backoff{}, func(ctx context.Context) error {
		revs, _, err := state.List[jointoken.Revocation](ctx, c, jointoken.Revocations(prefix))
		if err != nil {
			return err
		}
		for _, r := range revs {
			if n, ok := new(big.Int).SetString(r.Value.Serial, 16); ok {
				revoked.Add(n)
			}
		}
		return nil
	}, func(err error) { log.Warn("read revoked certificates", "error", err) })
}
