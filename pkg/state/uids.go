package state

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Formation uids. Slug apps of a formation run as uid:gid AppUID, a uid no
// host account and no other formation has. The range lies above the host
// account ranges (regular users below 60000, nobody 65534, systemd's
// dynamic users 61184-65519, subordinate uids for user namespaces from
// 100000, SSSD's default id mapping 200000-2000200000) and below 2^31 and
// systemd's reserved ranges from 2147352576, so that no program that
// stores uids in a signed 32-bit integer trips on it.
//
//	[FirstAppUID, FirstAppUID+AppUIDs)           allocated: FirstAppUID + n,
//	                                             n from the NextUID counter
//	[FirstAppUID+AppUIDs, FirstAppUID+2*AppUIDs) formations created before
//	                                             allocation: a hash of the name
const (
	FirstAppUID = 2_010_000_000
	AppUIDs     = 50_000_000
)

// AppUID is the uid the slug apps of formation f run as, given its
// recorded uid: uid itself when it lies in the allocated range, otherwise
// (0: a formation created before uids were allocated) one derived from a
// hash of the name in the range above. It is never 0, never a host
// account's, and the same on every node.
func AppUID(f string, uid int) int {
	if uid >= FirstAppUID && uid < FirstAppUID+2*AppUIDs {
		return uid
	}
	sum := sha256.Sum256([]byte("deis formation uid\n" + f))
	return FirstAppUID + AppUIDs + int(binary.BigEndian.Uint64(sum[:8])%AppUIDs)
}

// AppUID is the uid the formation's slug apps run as (see the function
// AppUID).
func (f *Formation) AppUID() int { return AppUID(f.Name, f.UID) }

// CreateFormation writes f, which must not exist yet, together with any
// extra ops, and gives it the next uid of the NextUID counter (f.UID is
// set). The counter moves in the same transaction, so two formations never
// get one uid. It returns an error wrapping ErrExists when the formation
// exists.
func (s *Store) CreateFormation(ctx context.Context, f *Formation, extra ...clientv3.Op) error {
	key, counter := s.Keys.Formation(f.Name), s.Keys.NextUID()
	for attempt := 0; attempt < 20; attempt++ {
		resp, err := s.KV.Get(ctx, counter)
		if err != nil {
			return fmt.Errorf("state: read the uid counter: %w", err)
		}
		n, rev := 0, int64(0)
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if n, err = strconv.Atoi(string(resp.Kvs[0].Value)); err != nil || n < 0 {
				return fmt.Errorf("state: the uid counter %s holds %q, not a count: fix it with etcdctl (the next free n)", counter, resp.Kvs[0].Value)
			}
		}
		if n >= AppUIDs {
			return fmt.Errorf("state: every one of the %d formation uids was given out: %w", AppUIDs, ErrConflict)
		}
		f.UID = FirstAppUID + n
		ok, err := s.Commit(ctx,
			[]clientv3.Cmp{
				clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
				clientv3.Compare(clientv3.ModRevision(counter), "=", rev),
			},
			append([]clientv3.Op{clientv3.OpPut(key, Marshal(f)), clientv3.OpPut(counter, strconv.Itoa(n+1))}, extra...)...)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		// The formation exists, or another create took the uid: look.
		var cur Formation
		if _, err := s.Get(ctx, key, &cur); err == nil {
			f.UID = 0
			return fmt.Errorf("%s: %w", key, ErrExists)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	f.UID = 0
	return fmt.Errorf("state: create formation %s: %w", f.Name, ErrConflict)
}
