package slugstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/deis/deis/pkg/pki"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultMaxFetchBytes bounds one file the replicator fetches when
// ReplicatorConfig.MaxBytes is not set.
const DefaultMaxFetchBytes = 8 << 30

// fetchTimeout bounds the download of one file from one holder.
const fetchTimeout = 30 * time.Minute

// ReplicatorConfig configures a Replicator.
type ReplicatorConfig struct {
	// Slugs is this coordinator's store; the replicator writes into it only
	// through PutVerified.
	Slugs *Store
	// State reads and writes the member and holder keys.
	State *state.Store
	// Watcher wakes the replicator on holder and member changes, and the
	// builder's wait for a second copy.
	Watcher clientv3.Watcher
	// Member is this coordinator's member id (MemberID).
	Member string
	// HTTP downloads from the other coordinators (default: a client over
	// TLS without a timeout of its own; each download has fetchTimeout).
	HTTP *http.Client
	// TLS is the default client's TLS config: pki.ClientTLS with the
	// coordinator's certificate, which every slug server requires
	// (RequirePlatform).
	TLS *tls.Config
	// MaxBytes is the largest file fetched (default DefaultMaxFetchBytes);
	// a holder that announces a larger one is not asked.
	MaxBytes int64
	// Resync is the period of the full pass that backs up the watch
	// (default a minute).
	Resync time.Duration
	Logger *slog.Logger
}

// Replicator keeps on this coordinator a copy of every slug and image
// archive some coordinator holds. See the package documentation.
type Replicator struct {
	cfg ReplicatorConfig

	mu       sync.Mutex
	failures map[string]*fetchFailure
}

// fetchFailure holds back the next fetch of a slug that could not be had.
type fetchFailure struct {
	bo    backoff.Backoff
	until time.Time
}

// NewReplicator checks cfg and returns a replicator.
func NewReplicator(cfg ReplicatorConfig) (*Replicator, error) {
	switch {
	case cfg.Slugs == nil || cfg.State == nil || cfg.Watcher == nil:
		return nil, errors.New("slugstore: replicator needs a slug store, a state store and a watcher")
	case state.ValidateName("member id", cfg.Member) != nil:
		return nil, fmt.Errorf("slugstore: replicator: invalid member id %q", cfg.Member)
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.TLS, Proxy: http.ProxyFromEnvironment}}
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxFetchBytes
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Replicator{cfg: cfg, failures: map[string]*fetchFailure{}}, nil
}

// Member is this coordinator's member id.
func (r *Replicator) Member() string { return r.cfg.Member }

// Hold records that this coordinator holds ref, which it has just stored
// (Store.Put hashed it on the way): the other coordinators start fetching
// it.
func (r *Replicator) Hold(ctx context.Context, ref state.SlugRef) error {
	if !r.cfg.Slugs.Has(ref.SHA256) {
		return fmt.Errorf("slugstore: slug %s is not stored here", ref.SHA256)
	}
	_, err := r.cfg.State.PutHolder(ctx, ref.SHA256, r.cfg.Member, ref.Size, false)
	return err
}

// Run keeps the copies level until ctx ends: a pass on every change of a
// holder or member key and every Resync.
func (r *Replicator) Run(ctx context.Context) error {
	w := watch.NewWaker()
	k := r.cfg.State.Keys
	watch.Prefixes(ctx, r.cfg.Watcher, 0, w, k.AllSlugHolders(), k.CoordinatorMembers())
	watch.Loop(ctx, w, r.cfg.Resync, backoff.Backoff{Min: time.Second, Max: time.Minute}, r.Pass, func(err error) {
		r.cfg.Logger.Warn("slug replication pass failed", "error", err)
	})
	return nil
}

// holding is what etcd says about one slug.
type holding struct {
	holders map[string]state.Entry[state.SlugHolder] // by member id
}

// Pass makes this coordinator's copies agree with the holder keys: it
// fetches (from the live holders, sha256- and size-verified) every slug
// some coordinator holds and this one lacks, records its own files that are
// held elsewhere but not recorded here, and drops its holder key for a
// file it no longer has. A slug nobody holds any more (GC removed it) is
// never fetched back. It returns the first error of a fetch it could not
// complete from any holder, after trying the others.
func (r *Replicator) Pass(ctx context.Context) error {
	st, k, me := r.cfg.State, r.cfg.State.Keys, r.cfg.Member
	list, _, err := state.List[state.SlugHolder](ctx, st.KV, k.AllSlugHolders())
	if err != nil {
		return err
	}
	slugs := map[string]*holding{}
	for _, e := range list {
		sha, member, ok := k.SlugHolderKey(e.Key)
		if !ok || !ValidSHA(sha) {
			continue
		}
		h := slugs[sha]
		if h == nil {
			h = &holding{holders: map[string]state.Entry[state.SlugHolder]{}}
			slugs[sha] = h
		}
		h.holders[member] = e
	}
	members, _, err := st.Members(ctx)
	if err != nil {
		return err
	}
	shas := make([]string, 0, len(slugs))
	for sha := range slugs {
		shas = append(shas, sha)
	}
	sort.Strings(shas)
	var first error
	for _, sha := range shas {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		h := slugs[sha]
		mine, recorded := h.holders[me]
		has := r.cfg.Slugs.Has(sha)
		switch {
		case recorded && has:
			continue
		case !recorded && has:
			// Stored here (a fetch whose record was lost, or a build's
			// slug): verify it before telling the others.
			n, err := r.cfg.Slugs.Verify(sha)
			if err != nil {
				r.cfg.Logger.Warn("slug file corrupt, removing it", "slug", sha, "error", err)
				_ = r.cfg.Slugs.Remove(sha)
				break
			}
			if _, err := st.PutHolder(ctx, sha, me, n, true); err != nil {
				return err
			}
			continue
		case recorded && !has:
			r.cfg.Logger.Warn("slug recorded here but missing from the store: fetching it again", "slug", sha)
			if _, err := st.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(mine.Key), "=", mine.ModRevision)},
				clientv3.OpDelete(mine.Key)); err != nil {
				return err
			}
			delete(h.holders, me)
		}
		if err := r.fetchHeld(ctx, sha, h, members); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// fetchHeld fetches sha from its live holders, in turn, unless a recent
// failure holds it back.
func (r *Replicator) fetchHeld(ctx context.Context, sha string, h *holding, members map[string]state.CoordinatorMember) error {
	r.mu.Lock()
	f := r.failures[sha]
	if f != nil && time.Now().Before(f.until) {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	var size int64
	var from []string
	ids := make([]string, 0, len(h.holders))
	for id := range h.holders {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if sz := h.holders[id].Value.Size; size == 0 && sz > 0 {
			size = sz
		}
		if m, ok := members[id]; ok && id != r.cfg.Member && m.SlugURL != "" {
			from = append(from, state.SlugFileURL(m.SlugURL, sha))
		}
	}
	if len(from) == 0 {
		return nil // no live holder now: a member that comes back wakes a pass
	}
	err := r.Fetch(ctx, state.SlugRef{SHA256: sha, Size: size}, from)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.failures, sha)
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if f == nil {
		f = &fetchFailure{bo: backoff.Backoff{Min: 5 * time.Second, Max: 5 * time.Minute}}
		r.failures[sha] = f
	}
	f.until = time.Now().Add(f.bo.Next())
	return err
}

// Fetch downloads ref from the URLs in turn until one serves exactly ref
// (its sha256, and its size when known), stores it and records this
// coordinator as a holder, provided some coordinator still holds it. A
// source that serves anything else is refused and the next is tried.
func (r *Replicator) Fetch(ctx context.Context, ref state.SlugRef, from []string) error {
	if !ValidSHA(ref.SHA256) {
		return fmt.Errorf("slugstore: invalid slug sha256 %q", ref.SHA256)
	}
	if ref.Size > r.cfg.MaxBytes {
		return fmt.Errorf("slugstore: slug %s is %d bytes, more than the %d this coordinator fetches", short(ref.SHA256), ref.Size, r.cfg.MaxBytes)
	}
	var errs []string
	for _, url := range from {
		got, err := r.fetchOne(ctx, ref, url)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.cfg.Logger.Warn("slug fetch failed", "slug", short(ref.SHA256), "from", url, "error", err)
			errs = append(errs, err.Error())
			continue
		}
		ok, err := r.cfg.State.PutHolder(ctx, got.SHA256, r.cfg.Member, got.Size, true)
		if err != nil {
			return err
		}
		if !ok {
			r.cfg.Logger.Info("slug fetched but no longer held anywhere (collected meanwhile); GC removes the copy", "slug", short(ref.SHA256))
			return nil
		}
		r.cfg.Logger.Info("slug replicated", "slug", short(ref.SHA256), "bytes", got.Size, "from", url)
		return nil
	}
	return fmt.Errorf("slugstore: no holder served slug %s: %s", short(ref.SHA256), strings.Join(errs, "; "))
}

// fetchOne downloads ref from url into the store, verified.
func (r *Replicator) fetchOne(ctx context.Context, ref state.SlugRef, url string) (state.SlugRef, error) {
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(fctx, http.MethodGet, url, nil)
	if err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: slug URL %q: %w", url, err)
	}
	resp, err := r.cfg.HTTP.Do(req)
	if err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: fetch %s: %w", url, pki.Explain(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return state.SlugRef{}, fmt.Errorf("slugstore: fetch %s: %s", url, resp.Status)
	}
	if ref.Size == 0 && resp.ContentLength > r.cfg.MaxBytes {
		return state.SlugRef{}, fmt.Errorf("slugstore: fetch %s: %d bytes, more than %d", url, resp.ContentLength, r.cfg.MaxBytes)
	}
	// A size not recorded: the download is bounded by MaxBytes alone.
	body := http.MaxBytesReader(nil, resp.Body, r.cfg.MaxBytes)
	got, err := r.cfg.Slugs.PutVerified(body, ref)
	if err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: fetch %s: %w", url, err)
	}
	return got, nil
}

// AwaitCopies waits until slug sha is held by at least two live
// coordinators (this one counts when it has recorded its copy), or there
// is no other live coordinator; say reports progress for the pusher. After
// timeout it fails, naming the coordinators that did not store it.
func (r *Replicator) AwaitCopies(ctx context.Context, sha string, timeout time.Duration, say func(string)) error {
	st, k := r.cfg.State, r.cfg.State.Keys
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w := watch.NewWaker()
	watch.Prefixes(wctx, r.cfg.Watcher, 0, w, k.SlugHolders(sha), k.CoordinatorMembers())
	tick := time.NewTicker(2 * time.Second) // a safety net for the watch
	defer tick.Stop()
	told, start := false, time.Now()
	for {
		holders, err := st.Holders(wctx, sha)
		if err != nil && wctx.Err() == nil {
			return err
		}
		members, _, err := st.Members(wctx)
		if err != nil && wctx.Err() == nil {
			return err
		}
		var others, copies []string
		for id := range members {
			if id != r.cfg.Member {
				others = append(others, id)
			}
		}
		for id := range holders {
			if _, live := members[id]; live || id == r.cfg.Member {
				copies = append(copies, id)
			}
		}
		sort.Strings(others)
		sort.Strings(copies)
		switch {
		case len(others) == 0:
			if told {
				say("-----> No other coordinator is running now: the copy here is the only one")
			}
			return nil
		case len(copies) >= 2:
			say(fmt.Sprintf("-----> Stored on %d coordinators (%s) in %.1fs", len(copies), strings.Join(copies, ", "), time.Since(start).Seconds()))
			return nil
		}
		if !told {
			say(fmt.Sprintf("-----> Storing %s on a second coordinator (%d running)...", short(sha), len(others)+1))
			told = true
		}
		select {
		case <-w:
		case <-tick.C:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("slugstore: the slug %s is stored on this coordinator only: no other running coordinator (%s) stored it within %s; nothing was released, so losing this coordinator cannot lose the release: check those coordinators' logs (\"slug fetch failed\") and their reach of this one's --slug-url, then push again",
				short(sha), strings.Join(others, ", "), timeout)
		}
	}
}

// short abbreviates a sha256 for messages.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
