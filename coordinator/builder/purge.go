package builder

// Purge removes from this coordinator what destroyed formations left behind:
// their git repositories, build logs and build caches (one directory per
// formation), the etcd keys that components wrote about them after the
// destroy, and then, through GC, their slugs and images. It is level
// triggered: every pass compares the per-formation directories with the
// formations in etcd, so a destroy while the coordinator was down is
// purged when it starts.
//
// A formation destroyed and created again with the same name is a new
// incarnation (a new etcd CreateRevision of its formation key). Purge keeps
// the incarnation that owns each formation's directories in
// DataDir/incarnations/<formation>; directories of an older incarnation are
// removed like those of a destroyed formation, so the new owner of a name
// never clones the old owner's repository.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// FormationDir is a directory with one entry per formation, named the
// formation's name followed by Suffix (the git server's repositories:
// DataDir/repos, ".git").
type FormationDir struct {
	Root   string
	Suffix string
	// Kind names the entries in logs and metrics ("repository").
	Kind string
}

// PurgeResult says what one purge pass removed.
type PurgeResult struct {
	// Removed lists the directories removed.
	Removed []string
	// Keys lists the formations whose leftover etcd keys were deleted.
	Keys []string
	// Busy lists the formations skipped because a build holds their lock;
	// the next pass tries again.
	Busy []string
}

// formationDirs are the per-formation directories: the builder's own and
// the extra ones (the git repositories).
func (b *Builder) formationDirs(extra []FormationDir) []FormationDir {
	return append([]FormationDir{
		{Root: b.builds, Kind: "build logs"},
		{Root: b.caches, Kind: "build cache"},
	}, extra...)
}

func (b *Builder) incarnations() string { return filepath.Join(b.cfg.DataDir, "incarnations") }

// Purge runs one pass. extra are per-formation directories kept by other
// parts of the coordinator (the git repositories). It removes the entries of
// every formation that does not exist or exists as a newer incarnation than
// the one that made them, under the formation's build lock (a formation
// whose build is running is skipped: see PurgeResult.Busy), deletes the
// etcd keys left of destroyed formations, and runs GC when it removed
// something. It follows no symlink: entries are found by name (only valid
// formation names) and removed with os.RemoveAll, which removes a link, not
// what it points to.
func (b *Builder) Purge(ctx context.Context, extra ...FormationDir) (PurgeResult, error) {
	var res PurgeResult
	log := b.cfg.Logger
	s := b.cfg.Store
	live, err := b.formationRevisions(ctx)
	if err != nil {
		return res, err
	}
	if err := b.checkInstallation(ctx); err != nil {
		return res, err
	}
	dirs := b.formationDirs(extra)
	owners := map[string]bool{} // formations with directories or an incarnation mark
	for _, d := range dirs {
		names, err := formationEntries(d)
		if err != nil {
			return res, err
		}
		for _, n := range names {
			owners[n] = true
		}
	}
	marks, err := formationEntries(FormationDir{Root: b.incarnations()})
	if err != nil {
		return res, err
	}
	for _, n := range marks {
		owners[n] = true
	}
	for f := range live {
		owners[f] = true
	}

	for _, f := range sortedNames(owners) {
		rev, exists := live[f]
		mark := b.readIncarnation(f)
		if exists && mark == rev {
			continue // the current incarnation owns whatever is there
		}
		unlock, ok := b.tryLock(f)
		if !ok {
			res.Busy = append(res.Busy, f)
			continue
		}
		removed, err := b.purgeFormation(ctx, f, rev, exists, mark, dirs)
		unlock()
		res.Removed = append(res.Removed, removed...)
		if err != nil {
			return res, err
		}
	}

	orphans, err := s.OrphanFormations(ctx)
	if err != nil {
		return res, fmt.Errorf("builder: purge: %w", err)
	}
	for _, f := range orphans {
		ok, err := s.PurgeFormationKeys(ctx, f)
		if err != nil {
			return res, fmt.Errorf("builder: purge: %w", err)
		}
		if ok {
			log.Info("purge: keys of a destroyed formation deleted", "formation", f)
			res.Keys = append(res.Keys, f)
		}
	}
	return res, nil
}

// purgeFormation handles one formation under its build lock: it re-reads
// the formation (it may have been created again since the listing), removes
// its directories if they belong to no live incarnation, and records the
// incarnation that owns the directories from now on.
func (b *Builder) purgeFormation(ctx context.Context, f string, rev int64, exists bool, mark int64, dirs []FormationDir) ([]string, error) {
	log := b.cfg.Logger
	cur, err := b.formationRevision(ctx, f)
	if err != nil {
		return nil, err
	}
	if cur != rev {
		return nil, nil // changed since the listing: the next pass (woken by that change) decides
	}
	why := "formation destroyed"
	switch {
	case exists && mark == 0:
		// First seen (or first seen since this coordinator knew about
		// incarnations): what is there is this incarnation's.
		return nil, b.writeIncarnation(f, rev)
	case exists && mark == rev:
		return nil, nil
	case exists:
		why = "formation destroyed and created again"
	}
	var removed []string
	for _, d := range dirs {
		p := filepath.Join(d.Root, f+d.Suffix)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return removed, fmt.Errorf("builder: purge %s of %s: %w", d.Kind, f, err)
		}
		log.Info("purge: removed", "formation", f, "kind", d.Kind, "path", p, "reason", why)
		b.m.gcRemoved.WithLabelValues(strings.ReplaceAll(d.Kind, " ", "_")).Inc()
		removed = append(removed, p)
	}
	if exists {
		return removed, b.writeIncarnation(f, rev)
	}
	if err := os.Remove(filepath.Join(b.incarnations(), f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return removed, fmt.Errorf("builder: purge: %w", err)
	}
	return removed, nil
}

// ErrIncarnationChanged is Claim's answer when the formation is no longer
// the incarnation the caller read: it was destroyed (and perhaps created
// again) since.
var ErrIncarnationChanged = errors.New("builder: the formation was destroyed or created again meanwhile")

// Claim makes formation f's directories belong to incarnation rev, which
// the caller has just read (state.Store.Incarnation): if an older
// incarnation of the name made them (the formation was destroyed and
// created again, and no purge pass has run since), Claim removes them, the
// builder's own and extra (the git repositories), and records rev as their
// owner, as a purge pass would. It does so under f's build lock, waiting
// for a running build of f while ctx allows, and after the same
// installation check as Purge (ErrOtherInstallation). When the directories
// already belong to rev it returns at once, without a lock or a read of
// etcd. Otherwise it returns an error wrapping ErrIncarnationChanged when
// f is no longer incarnation rev, and then it changed nothing.
//
// The git server claims a formation's directories before every session, so
// that a clone never serves, and a push never builds on, what the previous
// owner of the name left.
func (b *Builder) Claim(ctx context.Context, f string, rev int64, extra ...FormationDir) error {
	if err := state.ValidateName("formation", f); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if rev <= 0 {
		return fmt.Errorf("builder: claim %s: %w", f, ErrIncarnationChanged)
	}
	if b.readIncarnation(f) == rev {
		return nil
	}
	if err := b.checkInstallation(ctx); err != nil {
		return err
	}
	unlock, err := b.lock(ctx, f, newConsole(io.Discard, nil))
	if err != nil {
		return fmt.Errorf("builder: claim %s: gave up waiting for its running build: %w", f, err)
	}
	defer unlock()
	if _, err := b.purgeFormation(ctx, f, rev, true, b.readIncarnation(f), b.formationDirs(extra)); err != nil {
		return err
	}
	if b.readIncarnation(f) != rev { // purgeFormation found another incarnation
		return fmt.Errorf("builder: claim %s: %w", f, ErrIncarnationChanged)
	}
	return nil
}

// ErrOtherInstallation is Purge's answer when the data directory was last
// used with another installation (another etcd cluster or prefix): its
// formations are not in this etcd, and removing their files would destroy
// them.
var ErrOtherInstallation = errors.New("builder: this data directory belongs to another installation")

// checkInstallation makes sure this etcd (cluster and prefix) is the one the
// data directory was used with: DataDir/incarnations/.installation holds
// the SHA-256 of the installation id (state.EnsureInstallation), which each
// installation creates once and which an etcd snapshot restores. On the
// first pass it records it.
func (b *Builder) checkInstallation(ctx context.Context) error {
	tok, err := state.EnsureInstallation(ctx, b.cfg.Store)
	if err != nil {
		return fmt.Errorf("builder: purge: %w", err)
	}
	if err := os.MkdirAll(b.incarnations(), 0o700); err != nil {
		return fmt.Errorf("builder: purge: %w", err)
	}
	sum := sha256.Sum256([]byte(tok))
	id := hex.EncodeToString(sum[:])
	p := filepath.Join(b.incarnations(), ".installation")
	data, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
			return fmt.Errorf("builder: purge: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("builder: purge: %w", err)
	case strings.TrimSpace(string(data)) != id:
		return fmt.Errorf("%w (its installation id differs from this etcd's): nothing is removed; check --etcd-endpoints and --prefix, or, if this directory is meant to serve this installation, remove %s",
			ErrOtherInstallation, b.incarnations())
	}
	return nil
}

// formationRevisions maps every formation to the CreateRevision of its
// key: which incarnation of the name exists now.
func (b *Builder) formationRevisions(ctx context.Context) (map[string]int64, error) {
	s := b.cfg.Store
	resp, err := s.KV.Get(ctx, s.Keys.Formations(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("builder: purge: list formations: %w", err)
	}
	out := make(map[string]int64, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[state.Base(string(kv.Key))] = kv.CreateRevision
	}
	return out, nil
}

// pinIncarnation returns ctx under which the build of req releases only into
// the incarnation of its formation that the push was for (req.Incarnation,
// or else the current one; when the formation does not exist, none: the
// build then fails, even if a formation of that name is created meanwhile).
func (b *Builder) pinIncarnation(ctx context.Context, req Request) (context.Context, error) {
	if state.ValidateName("formation", req.Formation) != nil {
		return ctx, nil // build refuses it with its own message
	}
	rev := req.Incarnation
	if rev == 0 {
		var err error
		if rev, err = b.cfg.Store.Incarnation(ctx, req.Formation); err != nil {
			return ctx, fmt.Errorf("builder: cannot read the formation now (the platform's state store does not answer); try again later: %w", err)
		}
	}
	if rev == 0 {
		rev = -1 // no formation now: none created during the build may take it
	}
	return state.WithIncarnation(ctx, req.Formation, rev), nil
}

// formationRevision is the CreateRevision of f's key, 0 if f does not exist.
func (b *Builder) formationRevision(ctx context.Context, f string) (int64, error) {
	rev, err := b.cfg.Store.Incarnation(ctx, f)
	if err != nil {
		return 0, fmt.Errorf("builder: purge: %w", err)
	}
	return rev, nil
}

// readIncarnation is the incarnation recorded for f, 0 if none (or
// unreadable: then the directories are adopted as the current one's).
func (b *Builder) readIncarnation(f string) int64 {
	data, err := os.ReadFile(filepath.Join(b.incarnations(), f))
	if err != nil {
		return 0
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

func (b *Builder) writeIncarnation(f string, rev int64) error {
	p := filepath.Join(b.incarnations(), f)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(rev, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("builder: purge: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("builder: purge: %w", err)
	}
	return nil
}

// formationEntries lists the formation names in d: entries named a valid
// formation name plus d.Suffix. Other entries (temporary files, anything
// an operator put there) are left alone. A missing d has none.
func formationEntries(d FormationDir) ([]string, error) {
	entries, err := os.ReadDir(d.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("builder: purge: %w", err)
	}
	var out []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), d.Suffix)
		if !ok || state.ValidateName("formation", name) != nil {
			continue
		}
		out = append(out, name)
	}
	return out, nil
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// tryLock takes formation f's build lock if no build holds it.
func (b *Builder) tryLock(f string) (func(), bool) {
	b.mu.Lock()
	ch, ok := b.locks[f]
	if !ok {
		ch = make(chan struct{}, 1)
		b.locks[f] = ch
	}
	b.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	default:
		return nil, false
	}
}

// RunPurge runs Purge whenever a formation changes and at least every
// interval, until ctx ends; after a pass that removed something it runs GC,
// so the destroyed formation's slugs and images go too. GC keeps what a
// runtime databag still names, so it runs again on runtime changes until no
// node runs a container of a destroyed formation.
func (b *Builder) RunPurge(ctx context.Context, w clientv3.Watcher, interval time.Duration, extra ...FormationDir) error {
	if interval <= 0 {
		return errors.New("builder: purge interval must be positive")
	}
	s := b.cfg.Store
	wake := watch.NewWaker()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch.Prefixes(wctx, w, 0, wake, s.Keys.Formations(), s.Keys.Runtimes())
	gcDue := false
	watch.Loop(ctx, wake, interval, backoff.Backoff{Min: 5 * time.Second, Max: 2 * time.Minute}, func(ctx context.Context) error {
		res, err := b.Purge(ctx, extra...)
		if len(res.Removed) > 0 || len(res.Keys) > 0 {
			gcDue = true
		}
		if err != nil {
			return err
		}
		if !gcDue {
			return nil
		}
		gres, err := b.GC(ctx)
		switch {
		case errors.Is(err, ErrBuildsRunning):
			return nil // the next pass (at most interval away) tries again
		case err != nil:
			return err
		}
		// Until the nodes stop a destroyed formation's containers, GC keeps
		// their slugs and images; a runtime change wakes the next pass.
		gcDue = gres.Lingering > 0
		b.cfg.Logger.Info("purge: gc done", "removed_slugs", gres.RemovedSlugs, "removed_images", gres.RemovedImages,
			"freed_bytes", gres.FreedBytes, "containers_of_destroyed_formations", gres.Lingering)
		return nil
	}, func(err error) { b.cfg.Logger.Warn("purge failed", "error", err) })
	return nil
}
