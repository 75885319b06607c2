package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// ErrNotFound is returned when a key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a guarded write keeps losing races.
	ErrConflict = errors.New("state: concurrent update, try again")
	// ErrExists is returned when creating something that already exists.
	ErrExists = errors.New("already exists")
)

// KV is the slice of the etcd client the store needs.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Txn(ctx context.Context) clientv3.Txn
}

// Store reads and writes the state model.
type Store struct {
	KV   KV
	Keys Keys
}

// NewStore returns a store over kv under prefix.
func NewStore(kv KV, prefix string) *Store { return &Store{KV: kv, Keys: NewKeys(prefix)} }

// Get reads key into v and returns its ModRevision.
func (s *Store) Get(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.KV.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("state: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("state: decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// Entry is one decoded key of a listing.
type Entry[T any] struct {
	Key         string
	ModRevision int64
	Value       T
}

// List decodes every key under prefix, in key order, and returns the
// revision of the read so a watch can start right after it.
func List[T any](ctx context.Context, kv KV, prefix string) ([]Entry[T], int64, error) {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("state: list %s: %w", prefix, err)
	}
	out := make([]Entry[T], 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, 0, fmt.Errorf("state: decode %s: %w", kv.Key, err)
		}
		out = append(out, Entry[T]{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: v})
	}
	return out, resp.Header.Revision, nil
}

// Marshal encodes v as the JSON stored in etcd.
func Marshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("state: marshal %T: %v", v, err)) // only plain data types are stored
	}
	return string(b)
}

// Commit runs ops if every guard holds and reports whether it did.
func (s *Store) Commit(ctx context.Context, guards []clientv3.Cmp, ops ...clientv3.Op) (bool, error) {
	resp, err := s.KV.Txn(ctx).If(guards...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("state: commit: %w", err)
	}
	return resp.Succeeded, nil
}

// Create writes v at key only if the key does not exist yet, together with
// any extra ops.
func (s *Store) Create(ctx context.Context, key string, v any, extra ...clientv3.Op) error {
	ok, err := s.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		append([]clientv3.Op{clientv3.OpPut(key, Marshal(v))}, extra...)...)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", key, ErrExists)
	}
	return nil
}

// Put writes v at key unconditionally. Use it only for keys with one writer
// that owns them outright (status reports, databags).
func (s *Store) Put(ctx context.Context, key string, v any, opts ...clientv3.OpOption) error {
	_, err := s.KV.Txn(ctx).Then(clientv3.OpPut(key, Marshal(v), opts...)).Commit()
	if err != nil {
		return fmt.Errorf("state: put %s: %w", key, err)
	}
	return nil
}

// Update reads key into a fresh T, calls fn to change it, and writes it back
// guarded by the revision it read; it retries when another writer got there
// first. If the key is missing fn gets a nil pointer and may return an
// error. fn returning (nil, nil) means "no change".
func Update[T any](ctx context.Context, s *Store, key string, fn func(cur *T) (*T, error)) (*T, error) {
	for attempt := 0; attempt < 20; attempt++ {
		var cur T
		rev, err := s.Get(ctx, key, &cur)
		var curp *T
		switch {
		case err == nil:
			curp = &cur
		case errors.Is(err, ErrNotFound):
		default:
			return nil, err
		}
		next, err := fn(curp)
		if err != nil {
			return nil, err
		}
		if next == nil {
			return curp, nil
		}
		guard := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		ok, err := s.Commit(ctx, []clientv3.Cmp{guard}, clientv3.OpPut(key, Marshal(next)))
		if err != nil {
			return nil, err
		}
		if ok {
			return next, nil
		}
	}
	return nil, ErrConflict
}

// GetFormation reads a formation, with an error that says how to create it.
func (s *Store) GetFormation(ctx context.Context, name string) (*Formation, int64, error) {
	var f Formation
	rev, err := s.Get(ctx, s.Keys.Formation(name), &f)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, fmt.Errorf("formation %q not found: create it with deisctl formations:create %s: %w", name, name, ErrNotFound)
	}
	return &f, rev, err
}

// LatestRelease returns the newest release of a formation, or ErrNotFound.
func (s *Store) LatestRelease(ctx context.Context, f string) (*Release, error) {
	resp, err := s.KV.Get(ctx, s.Keys.Releases(f), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return nil, fmt.Errorf("state: latest release of %s: %w", f, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("formation %q has no release yet: %w", f, ErrNotFound)
	}
	var r Release
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return nil, fmt.Errorf("state: decode release: %w", err)
	}
	return &r, nil
}

// GetRelease reads release v of formation f.
func (s *Store) GetRelease(ctx context.Context, f string, v int) (*Release, error) {
	var r Release
	if _, err := s.Get(ctx, s.Keys.Release(f, v), &r); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("release v%d of %q does not exist: list them with deisctl releases -f %s: %w", v, f, f, ErrNotFound)
		}
		return nil, err
	}
	return &r, nil
}

// AppendRelease is the release log's one write path. It reads the newest
// release (nil for a formation with none), calls next to derive the new one,
// and writes it as version N+1 in one transaction that also runs extra ops
// and holds only if release N+1 does not exist yet, the formation still
// exists (as the incarnation ctx requires, if any: WithIncarnation), and
// every guard still holds. It retries on a lost race, so callers get exactly
// one new release with a unique number.
func (s *Store) AppendRelease(ctx context.Context, f string, next func(prev *Release) (*Release, []clientv3.Cmp, []clientv3.Op, error)) (*Release, error) {
	for attempt := 0; attempt < 20; attempt++ {
		prev, err := s.LatestRelease(ctx, f)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if errors.Is(err, ErrNotFound) {
			prev = nil
		}
		rel, guards, extra, err := next(prev)
		if err != nil {
			return nil, err
		}
		rel.Formation = f
		rel.Version = 1
		if prev != nil {
			rel.Version = prev.Version + 1
		}
		if rel.Created.IsZero() {
			rel.Created = time.Now().UTC()
		}
		key := s.Keys.Release(f, rel.Version)
		guards = append(guards,
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), ">", 0))
		inc := IncarnationOf(ctx, f)
		if inc != 0 {
			guards = append(guards, s.SameIncarnation(f, inc))
		}
		ok, err := s.Commit(ctx, guards, append([]clientv3.Op{clientv3.OpPut(key, Marshal(rel))}, extra...)...)
		if err != nil {
			return nil, err
		}
		if ok {
			return rel, nil
		}
		if _, _, err := s.GetFormation(ctx, f); err != nil {
			return nil, err
		}
		if inc != 0 {
			if now, err := s.Incarnation(ctx, f); err != nil {
				return nil, err
			} else if now != inc {
				return nil, recreatedError(f)
			}
		}
	}
	return nil, ErrConflict
}
