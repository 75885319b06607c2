package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrBuildsRunning is GC's answer while a build is between making its slug
// or image and writing its release: collecting then could remove what the
// build is about to release. RunGC tries again soon.
var ErrBuildsRunning = errors.New("builder: a build is releasing; garbage collection deferred")

// GCResult says what one garbage collection kept and removed. Slugs count
// every file of the slug store: slugs and image archives alike.
type GCResult struct {
	KeptSlugs, KeptImages                     int
	RemovedSlugs, RemovedImages, RemovedCache int
	FreedBytes                                int64
	// Lingering counts the containers of destroyed formations that runtime
	// databags still name: their slugs and images were kept this time.
	Lingering int
}

// incomingGrace is how old an interrupted slug upload must be to be removed.
const incomingGrace = 24 * time.Hour

// GC removes the slugs, image archives and app images that no release needs
// any more, and the slugs' holder keys (state.Keys.SlugHolders) with them. It keeps everything referenced by the KeepReleases newest
// releases of each formation and by any runtime databag (what the nodes run
// now), and removes every other file of the slug store and every other image this
// coordinator built from a Dockerfile (deis/app-*): the releases of a
// formation that no longer exists keep nothing. It also removes the build
// caches of formations that no longer exist. It changes nothing when
// it cannot read the whole state, and returns ErrBuildsRunning while a build
// is releasing, and ErrOtherInstallation when the data directory was used
// with another installation (see Purge).
func (b *Builder) GC(ctx context.Context) (GCResult, error) {
	var res GCResult
	if !b.artifacts.TryLock() {
		b.m.gcRuns.WithLabelValues("deferred").Inc()
		return res, ErrBuildsRunning
	}
	defer b.artifacts.Unlock()
	res, err := b.gc(ctx)
	if err != nil {
		b.m.gcRuns.WithLabelValues("failed").Inc()
		return res, err
	}
	b.m.gcRuns.WithLabelValues("done").Inc()
	return res, nil
}

func (b *Builder) gc(ctx context.Context) (GCResult, error) {
	var res GCResult
	log := b.cfg.Logger
	// Against another installation's etcd, every slug would look unused.
	if err := b.checkInstallation(ctx); err != nil {
		return res, err
	}
	keep, err := b.referenced(ctx)
	if err != nil {
		return res, err
	}
	res.Lingering = keep.lingering

	slugs, err := b.cfg.Slugs.List()
	if err != nil {
		return res, fmt.Errorf("builder: gc: %w", err)
	}
	for _, s := range slugs {
		if keep.slugs[s.SHA256] || b.cfg.Replicas != nil && time.Since(s.ModTime) < b.freshGrace() {
			res.KeptSlugs++
			continue
		}
		// Its holder keys go first, and only if no coordinator stored it
		// since the references were read; else it is kept this time.
		if ok, err := b.cfg.Store.DeleteHolders(ctx, s.SHA256, keep.rev); err != nil || !ok {
			if err != nil {
				log.Warn("gc: cannot remove the slug's holder keys", "slug", s.SHA256, "error", err)
			}
			res.KeptSlugs++
			continue
		}
		if err := b.cfg.Slugs.Remove(s.SHA256); err != nil {
			log.Warn("gc: cannot remove slug", "slug", s.SHA256, "error", err)
			continue
		}
		log.Info("gc: slug removed", "slug", s.SHA256, "bytes", s.Size)
		res.RemovedSlugs++
		res.FreedBytes += s.Size
		b.m.gcRemoved.WithLabelValues("slug").Inc()
		b.m.gcFreed.Add(float64(s.Size))
	}
	if n, err := b.orphanHolders(ctx, keep); err != nil {
		log.Warn("gc: cannot remove the holder keys of lost coordinators", "error", err)
	} else if n > 0 {
		log.Info("gc: holder keys of slugs only lost coordinators held removed", "slugs", n)
	}
	if n, err := b.cfg.Slugs.RemoveIncoming(incomingGrace); err != nil {
		log.Warn("gc: cannot remove interrupted slug uploads", "error", err)
	} else if n > 0 {
		log.Info("gc: interrupted slug uploads removed", "count", n)
	}

	lctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	images, err := b.cfg.Docker.ListImages(lctx, map[string]string{labelRole: roleImage, labelBuilder: b.instance})
	cancel()
	if err != nil {
		return res, fmt.Errorf("builder: gc: list app images: %w", err)
	}
	for _, img := range images {
		if imageReferenced(img, keep.images) {
			res.KeptImages++
			continue
		}
		refs := []string{}
		for _, t := range img.Tags {
			if isAppImage(t) {
				refs = append(refs, t)
			}
		}
		if len(refs) == 0 {
			refs = []string{img.ID}
		}
		removed := true
		for _, ref := range refs {
			rctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
			err := b.cfg.Docker.RemoveImage(rctx, ref)
			cancel()
			if err != nil {
				// Most likely a container still uses it: the next run
				// tries again.
				log.Warn("gc: cannot remove app image", "image", ref, "error", err)
				removed = false
			}
		}
		if removed {
			log.Info("gc: app image removed", "image", strings.Join(refs, ","))
			res.RemovedImages++
			b.m.gcRemoved.WithLabelValues("image").Inc()
		}
	}

	entries, err := os.ReadDir(b.caches)
	if err != nil {
		return res, fmt.Errorf("builder: gc: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || keep.formations[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(b.caches, e.Name())); err != nil {
			log.Warn("gc: cannot remove build cache", "formation", e.Name(), "error", err)
			continue
		}
		log.Info("gc: build cache of a deleted formation removed", "formation", e.Name())
		res.RemovedCache++
		b.m.gcRemoved.WithLabelValues("cache").Inc()
	}
	return res, nil
}

func imageReferenced(img ImageInfo, keep map[string]bool) bool {
	if keep[img.ID] {
		return true
	}
	for _, t := range img.Tags {
		if keep[t] {
			return true
		}
	}
	return false
}

// references are what must not be collected.
type references struct {
	slugs      map[string]bool // sha256 of slugs and image archives
	images     map[string]bool // image names and ids
	formations map[string]bool
	lingering  int   // containers of formations that no longer exist
	rev        int64 // the revision of the first read
}

// freshGrace is how long GC keeps a slug file that was just stored, when
// slugs are replicated: another coordinator's build may be waiting for
// this copy before it writes the release that will refer to it.
func (b *Builder) freshGrace() time.Duration { return b.cfg.Timeout + b.cfg.ReplicaTimeout }

// referenced reads the formations, the newest KeepReleases releases of each
// formation and every runtime databag.
func (b *Builder) referenced(ctx context.Context) (references, error) {
	s := b.cfg.Store
	ref := references{slugs: map[string]bool{}, images: map[string]bool{}, formations: map[string]bool{}}
	add := func(build *state.Build) {
		if build == nil {
			return
		}
		if build.Slug != nil {
			ref.slugs[build.Slug.SHA256] = true
		}
		if build.ImageArchive != nil {
			ref.slugs[build.ImageArchive.SHA256] = true
		}
		if build.Image != "" {
			ref.images[build.Image] = true
		}
	}

	resp, err := s.KV.Get(ctx, s.Keys.Formations(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return ref, fmt.Errorf("builder: gc: list formations: %w", err)
	}
	ref.rev = resp.Header.Revision
	for _, kv := range resp.Kvs {
		ref.formations[state.Base(string(kv.Key))] = true
	}

	// Formations with releases. The releases of a formation that no longer
	// exists keep nothing: destroying it removed everything it owned.
	resp, err = s.KV.Get(ctx, s.Keys.AllReleases(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return ref, fmt.Errorf("builder: gc: list releases: %w", err)
	}
	withReleases := map[string]bool{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), s.Keys.AllReleases())
		if f, _, ok := strings.Cut(rest, "/"); ok && ref.formations[f] {
			withReleases[f] = true
		}
	}
	for f := range withReleases {
		resp, err := s.KV.Get(ctx, s.Keys.Releases(f), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(b.cfg.KeepReleases)))
		if err != nil {
			return ref, fmt.Errorf("builder: gc: read releases of %s: %w", f, err)
		}
		for _, kv := range resp.Kvs {
			var r state.Release
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return ref, fmt.Errorf("builder: gc: decode %s: %w", kv.Key, err)
			}
			add(r.Build)
		}
	}

	runtimes, _, err := state.List[state.Runtime](ctx, s.KV, s.Keys.Runtimes())
	if err != nil {
		return ref, fmt.Errorf("builder: gc: %w", err)
	}
	for _, rt := range runtimes {
		for _, c := range rt.Value.Containers {
			if !ref.formations[c.Formation] {
				ref.lingering++
			}
			if c.Slug != nil {
				ref.slugs[c.Slug.SHA256] = true
			}
			if c.ImageArchive != nil {
				ref.slugs[c.ImageArchive.SHA256] = true
			}
			if c.Image != "" {
				ref.images[c.Image] = true
			}
		}
	}
	return ref, nil
}

// RunGC runs GC every interval until ctx ends, and sooner again when it
// was deferred by a build. It logs what each run removed.
func (b *Builder) RunGC(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return errors.New("builder: gc interval must be positive")
	}
	retry := backoff.Backoff{Min: 10 * time.Second, Max: 2 * time.Minute}
	wait := backoff.Jitter(interval)
	for {
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil
		}
		res, err := b.GC(ctx)
		switch {
		case errors.Is(err, ErrBuildsRunning):
			wait = retry.Next()
			b.cfg.Logger.Debug("gc deferred: a build is releasing", "retry", wait.Round(time.Second).String())
			continue
		case err != nil:
			wait = retry.Next()
			b.cfg.Logger.Warn("gc failed", "error", err, "retry", wait.Round(time.Second).String())
			continue
		}
		retry.Reset()
		wait = backoff.Jitter(interval)
		b.cfg.Logger.Info("gc done", "removed_slugs", res.RemovedSlugs, "removed_images", res.RemovedImages,
			"removed_caches", res.RemovedCache, "freed_bytes", res.FreedBytes, "kept_slugs", res.KeptSlugs, "kept_images", res.KeptImages)
	}
}

// orphanHolders deletes the holder keys of slugs that no release needs and
// that only coordinators no longer running hold (a coordinator lost for
// good leaves its keys behind; no GC of a running one would see their
// files). It returns how many slugs it forgot.
func (b *Builder) orphanHolders(ctx context.Context, keep references) (int, error) {
	s := b.cfg.Store
	list, _, err := state.List[state.SlugHolder](ctx, s.KV, s.Keys.AllSlugHolders())
	if err != nil || len(list) == 0 {
		return 0, err
	}
	members, _, err := s.Members(ctx)
	if err != nil {
		return 0, err
	}
	orphan := map[string]bool{}
	for _, e := range list {
		sha, member, ok := s.Keys.SlugHolderKey(e.Key)
		if !ok {
			continue
		}
		_, live := members[member]
		fresh := time.Since(e.Value.Stored) < b.freshGrace()
		if o, seen := orphan[sha]; seen && !o {
			continue
		}
		orphan[sha] = !keep.slugs[sha] && !live && !fresh && !b.cfg.Slugs.Has(sha)
	}
	n := 0
	for sha, o := range orphan {
		if !o {
			continue
		}
		if ok, err := s.DeleteHolders(ctx, sha, keep.rev); err != nil {
			return n, err
		} else if ok {
			n++
		}
	}
	return n, nil
}
