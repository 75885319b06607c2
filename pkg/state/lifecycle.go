package state

import (
	"context"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Family is one group of keys that belongs to a single formation: either one
// key (Prefix false) or every key under a prefix that ends in "/".
type Family struct {
	Key    string
	Prefix bool
}

// op is the delete of the family.
func (fam Family) op() clientv3.Op {
	if fam.Prefix {
		return clientv3.OpDelete(fam.Key, clientv3.WithPrefix())
	}
	return clientv3.OpDelete(fam.Key)
}

// FormationFamilies is every key family keyed by formation f: whatever a
// formation owns in etcd. It is the one list that destroying a formation
// deletes (DestroyFormation, and the coordinator's purge of the keys of
// formations that no longer exist). A new Keys method that takes a
// formation must be added here: TestFormationFamiliesCoverKeys fails until
// it is. The slug holder keys (Keys.SlugHolders) are keyed by content, not
// by formation: the builder's GC owns them and deletes them with the slug
// it collects, which for a destroyed formation happens once no node runs
// its slugs.
func (k Keys) FormationFamilies(f string) []Family {
	return []Family{
		{Key: k.Formation(f)},
		{Key: k.Layers(f), Prefix: true},
		{Key: k.Config(f)},
		{Key: k.Builds(f), Prefix: true},
		{Key: k.Releases(f), Prefix: true},
		{Key: k.Perms(f), Prefix: true},
		{Key: k.Routing(f)},
		{Key: k.FormationStatus(f)},
		{Key: k.ReleaseStatuses(f), Prefix: true},
		{Key: k.Certs(f), Prefix: true},
		{Key: k.ACMEChallenges(f), Prefix: true},
		{Key: k.ACMEStatus(f)},
	}
}

// DestroyFormation deletes formation f and every key it owns
// (Keys.FormationFamilies) in one transaction, so a formation created again
// with the same name starts empty: no config, releases, builds, permissions,
// routing or status of the old one. It returns an error wrapping ErrNotFound
// when f does not exist, and then changes nothing. The coordinator removes
// the formation's containers, repository, build logs and caches, and its
// slugs and images, once it sees the formation gone.
func (s *Store) DestroyFormation(ctx context.Context, f string) error {
	if err := ValidateName("formation", f); err != nil {
		return err
	}
	fams := s.Keys.FormationFamilies(f)
	ops := make([]clientv3.Op, 0, len(fams))
	for _, fam := range fams {
		ops = append(ops, fam.op())
	}
	ok, err := s.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), ">", 0)}, ops...)
	if err != nil {
		return fmt.Errorf("state: destroy formation %s: %w", f, err)
	}
	if !ok {
		return fmt.Errorf("formation %q not found: list formations with deisctl formations:list: %w", f, ErrNotFound)
	}
	return nil
}

// PurgeFormationKeys deletes every key of the families of f if f does not
// exist, all in one transaction that holds only while the formation key is
// absent. It cleans up what a component wrote after the formation was
// destroyed (a status report of a pass that read it just before). It
// reports whether it ran: false means f exists again, and nothing changed.
func (s *Store) PurgeFormationKeys(ctx context.Context, f string) (bool, error) {
	if err := ValidateName("formation", f); err != nil {
		return false, err
	}
	var ops []clientv3.Op
	for _, fam := range s.Keys.FormationFamilies(f) {
		ops = append(ops, fam.op())
	}
	ok, err := s.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), "=", 0)}, ops...)
	if err != nil {
		return false, fmt.Errorf("state: purge keys of formation %s: %w", f, err)
	}
	return ok, nil
}

// OrphanFormations lists the names that own keys in a formation's families
// (Keys.FormationFamilies) but have no formation key: leftovers of destroyed
// formations, for PurgeFormationKeys.
func (s *Store) OrphanFormations(ctx context.Context) ([]string, error) {
	const probe = "\x00"
	names := map[string]bool{}
	for _, fam := range s.Keys.FormationFamilies(probe) {
		root, _, _ := strings.Cut(fam.Key, probe)
		resp, err := s.KV.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("state: list %s: %w", root, err)
		}
		for _, kv := range resp.Kvs {
			name, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), root), "/")
			if ValidateName("formation", name) == nil {
				names[name] = true
			}
		}
	}
	resp, err := s.KV.Get(ctx, s.Keys.Formations(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("state: list formations: %w", err)
	}
	for _, kv := range resp.Kvs {
		delete(names, Base(string(kv.Key)))
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// Incarnation is the CreateRevision of formation f's key: it tells a
// formation from one destroyed and created again with the same name. It is
// 0 when f does not exist.
func (s *Store) Incarnation(ctx context.Context, f string) (int64, error) {
	resp, err := s.KV.Get(ctx, s.Keys.Formation(f), clientv3.WithKeysOnly())
	if err != nil {
		return 0, fmt.Errorf("state: read formation %s: %w", f, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].CreateRevision, nil
}

// SameIncarnation is a transaction guard that holds while formation f is
// still incarnation rev (see Incarnation): a write prepared for a formation
// must not land in another one created since with the same name, such as a
// build that was running when its formation was destroyed.
func (s *Store) SameIncarnation(f string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), "=", rev)
}

type incarnationKey struct{ formation string }

// WithIncarnation returns a context under which AppendRelease writes a
// release of formation f only while f is still incarnation rev (see
// Incarnation): a build that started before its formation was destroyed
// and created again with the same name releases nothing into the new one.
func WithIncarnation(ctx context.Context, f string, rev int64) context.Context {
	return context.WithValue(ctx, incarnationKey{f}, rev)
}

// IncarnationOf is the incarnation ctx requires of f (WithIncarnation), 0
// for none; -1 requires that f does not exist.
func IncarnationOf(ctx context.Context, f string) int64 {
	rev, _ := ctx.Value(incarnationKey{f}).(int64)
	return rev
}

// CheckIncarnation tells whether formation f is still the incarnation ctx
// requires (WithIncarnation); it is nil when ctx requires none. A build
// checks it before it starts, so that a push accepted for one incarnation
// builds nothing, and releases nothing, for another created since.
func (s *Store) CheckIncarnation(ctx context.Context, f string) error {
	want := IncarnationOf(ctx, f)
	if want == 0 {
		return nil
	}
	now, err := s.Incarnation(ctx, f)
	switch {
	case err != nil:
		return err
	case now == want:
		return nil
	case now == 0 && want < 0:
		return notFound(fmt.Sprintf("formation %q not found: create it with deisctl formations:create %s", f, f))
	case now == 0:
		return notFound(fmt.Sprintf("formation %q was destroyed meanwhile: nothing released", f))
	}
	return recreatedError(f)
}

// recreatedError is the answer to a write meant for an incarnation of f
// that was destroyed, when f has been created again since.
func recreatedError(f string) error {
	return notFound(fmt.Sprintf("formation %q was destroyed and created again meanwhile: nothing released into the new formation", f))
}

// notFound is an error that reads msg (which the pusher sees as it is) and
// wraps ErrNotFound.
type notFound string

func (e notFound) Error() string { return string(e) }
func (e notFound) Unwrap() error { return ErrNotFound }
