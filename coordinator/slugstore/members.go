package slugstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// memberIDFile is the file in the data directory that keeps the
// coordinator's member id.
const memberIDFile = "member-id"

// MemberID returns this coordinator's member id, kept in
// dataDir/member-id: made once (random) and the same after every restart,
// so the slugs it holds stay recorded under it. A coordinator whose data
// directory is lost comes back as a new member with no slugs.
func MemberID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, memberIDFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if state.ValidateName("member id", id) != nil {
			return "", fmt.Errorf("slugstore: %s holds %q, not a member id: remove the file to get a new one", p, id)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("slugstore: member id: %w", err)
	}
	raw := make([]byte, 8)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("slugstore: member id: %w", err)
	}
	id := "c" + hex.EncodeToString(raw)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("slugstore: member id: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("slugstore: member id: %w", err)
	}
	return id, nil
}

// Register keeps m registered at Keys.CoordinatorMember(m.ID), bound to a
// lease of ttl seconds that it keeps alive, until ctx ends (then it
// revokes the lease, so the others stop counting on this coordinator at
// once). When the lease is lost it registers again.
func Register(ctx context.Context, lease clientv3.Lease, s *state.Store, m state.CoordinatorMember, ttl int64, log *slog.Logger) error {
	if state.ValidateName("member id", m.ID) != nil || m.SlugURL == "" {
		return fmt.Errorf("slugstore: register: member %q needs an id and a slug URL", m.ID)
	}
	bo := backoff.Backoff{Min: time.Second, Max: 10 * time.Second}
	for ctx.Err() == nil {
		err := registerOnce(ctx, lease, s, m, ttl)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("coordinator registration lost, registering again", "member", m.ID, "error", err)
		if bo.Wait(ctx) != nil {
			return nil
		}
	}
	return nil
}

func registerOnce(ctx context.Context, lease clientv3.Lease, s *state.Store, m state.CoordinatorMember, ttl int64) error {
	g, err := lease.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = lease.Revoke(rctx, g.ID)
		cancel()
	}()
	if err := s.Put(ctx, s.Keys.CoordinatorMember(m.ID), m, clientv3.WithLease(g.ID)); err != nil {
		return err
	}
	ka, err := lease.KeepAlive(ctx, g.ID)
	if err != nil {
		return fmt.Errorf("keep alive: %w", err)
	}
	for range ka {
	}
	return errors.New("lease keep-alive ended")
}
