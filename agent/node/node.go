package node

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is what heartbeating needs of the etcd client.
type Etcd interface {
	state.KV
	clientv3.Lease
}

// Heartbeat registers node and keeps its heartbeat alive with a lease of ttl
// until ctx ends. The lease is revoked on a clean exit only when revoke is
// set; by default an agent that stops is treated like one that died, so its
// containers are moved only after the TTL.
func Heartbeat(ctx context.Context, c Etcd, store *state.Store, node *state.Node, ttl time.Duration, log *slog.Logger) error {
	if err := store.Put(ctx, store.Keys.Node(node.Name), node); err != nil {
		return fmt.Errorf("node: register %s: %w", node.Name, err)
	}
	secs := int64(ttl / time.Second)
	if secs < 2 {
		secs = 2
	}
	var bo backoff.Backoff
	for ctx.Err() == nil {
		lease, err := c.Grant(ctx, secs)
		if err != nil {
			log.Warn("heartbeat lease grant failed", "node", node.Name, "error", err)
			_ = bo.Wait(ctx)
			continue
		}
		hb := state.Heartbeat{Node: node.Name, At: time.Now().UTC()}
		if err := store.Put(ctx, store.Keys.Heartbeat(node.Name), hb, clientv3.WithLease(lease.ID)); err != nil {
			if etcdauth.IsPermissionDenied(err) {
				log.Error("etcd refuses this node's heartbeat: its credentials were revoked (deisctl nodes:remove), so it gets no work; to join again delete <state-dir>/credentials and start the agent with a new token from deisctl nodes:add", "node", node.Name, "error", err)
			} else {
				log.Warn("heartbeat put failed", "node", node.Name, "error", err)
			}
			_ = bo.Wait(ctx)
			continue
		}
		ch, err := c.KeepAlive(ctx, lease.ID)
		if err != nil {
			log.Warn("heartbeat keepalive failed", "node", node.Name, "error", err)
			_ = bo.Wait(ctx)
			continue
		}
		bo.Reset()
		log.Info("heartbeat started", "node", node.Name, "ttl", ttl)
		for range ch {
		}
		if ctx.Err() == nil {
			log.Warn("heartbeat lease lost, renewing", "node", node.Name)
			// Registration may have been removed while we were away.
			if err := store.Put(ctx, store.Keys.Node(node.Name), node); err != nil {
				log.Warn("re-register failed", "node", node.Name, "error", err)
			}
		}
	}
	return nil
}
