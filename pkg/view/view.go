package view

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Getter is what a one-shot Load needs of the etcd client.
type Getter interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
}

// Etcd is what a View needs: Get and Watch.
type Etcd interface {
	Getter
	clientv3.Watcher
}

// Options configures a View.
type Options struct {
	// Families limits what is kept (nil: DefaultFamilies). A view of
	// chosen families watches only their prefixes.
	Families []Family
	Logger   *slog.Logger
	// PageSize is how many keys one Get of the initial read returns
	// (default 500).
	PageSize int64
}

// View is a State kept current by an etcd watch. Its methods are safe for
// concurrent use.
type View struct {
	cli    Etcd
	keys   state.Keys
	p      parser
	whole  bool // watch the whole prefix (Families nil)
	log    *slog.Logger
	page   int64
	mu     sync.RWMutex
	st     *State
	ready  chan struct{}
	once   sync.Once
	subsMu sync.Mutex
	subs   map[*Sub]bool
	// revMu guards revCh, closed (and replaced) whenever Rev may have
	// advanced.
	revMu sync.Mutex
	revCh chan struct{}
	// rebuilds counts the reads after the first (tests and metrics).
	rebuilds int
}

// New returns a view of the installation under prefix; Run fills and
// maintains it.
func New(cli Etcd, prefix string, opt Options) *View {
	fams := opt.Families
	whole := fams == nil
	if whole {
		fams = DefaultFamilies
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.PageSize <= 0 {
		opt.PageSize = 500
	}
	k := state.NewKeys(prefix)
	return &View{cli: cli, keys: k, p: parser{keys: k, fams: fams}, whole: whole, log: opt.Logger,
		page: opt.PageSize, st: newState(), ready: make(chan struct{}), subs: map[*Sub]bool{}, revCh: make(chan struct{})}
}

// Run reads the prefix once at a revision R (paged Gets, all at R), then
// watches from R+1 and applies every event. On a compaction, a canceled
// or a lost watch it reads again and marks everything touched. It returns
// nil when ctx ends.
func (v *View) Run(ctx context.Context) error {
	var bo backoff.Backoff
	for {
		st, err := read(ctx, v.cli, v.p, v.p.ranges(), v.page, v.log)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := bo.Next()
			v.log.Warn("view: read failed, will retry", "error", err, "retry_in", d)
			if backoff.Sleep(ctx, d) != nil {
				return nil
			}
			continue
		}
		bo.Reset()
		v.install(st)
		err = v.follow(ctx, st.Rev+1)
		if ctx.Err() != nil {
			return nil
		}
		v.log.Warn("view: watch lost, reading again", "error", err)
		if backoff.Sleep(ctx, backoff.Jitter(50*time.Millisecond)) != nil {
			return nil
		}
	}
}

// install swaps in a freshly read state and wakes every subscriber with
// everything touched.
func (v *View) install(st *State) {
	v.mu.Lock()
	first := v.st.Rev == 0 && !v.isReady()
	v.st = st
	if !first {
		v.rebuilds++
	}
	v.mu.Unlock()
	v.once.Do(func() { close(v.ready) })
	v.advanced()
	v.notify(Touched{All: true})
}

func (v *View) isReady() bool {
	select {
	case <-v.ready:
		return true
	default:
		return false
	}
}

// WaitReady blocks until the first read is applied, or ctx ends.
func (v *View) WaitReady(ctx context.Context) error {
	select {
	case <-v.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Read runs fn with the current State under a read lock; fn must neither
// keep nor modify it.
func (v *View) Read(fn func(s *State)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	fn(v.st)
}

// Rev is the revision the view is at.
func (v *View) Rev() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.st.Rev
}

// advanced wakes WaitRev.
func (v *View) advanced() {
	v.revMu.Lock()
	close(v.revCh)
	v.revCh = make(chan struct{})
	v.revMu.Unlock()
}

// WaitRev returns once the view has applied every change up to revision
// rev (a write of the caller's, say), or ctx ends. When no event comes to
// carry the view there (the write changed no key it keeps), it asks etcd
// for a progress notification, which only a view of the whole prefix
// (Families nil) counts; a view of chosen families then waits for ctx.
func (v *View) WaitRev(ctx context.Context, rev int64) error {
	for {
		v.revMu.Lock()
		ch := v.revCh
		v.revMu.Unlock()
		if v.Rev() >= rev {
			return nil
		}
		if v.whole && v.isReady() {
			// Best effort: on failure the next event or retry carries it.
			_ = v.cli.RequestProgress(clientv3.WithRequireLeader(ctx))
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// follow applies watch events from rev until the watch fails or ctx ends.
func (v *View) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	var prefixes []string
	if v.whole {
		prefixes = []string{v.keys.Prefix + "/"}
	} else {
		for _, fam := range v.p.fams {
			prefixes = append(prefixes, fam.prefix(v.keys))
		}
	}
	type resp struct {
		r  clientv3.WatchResponse
		ok bool
	}
	merged := make(chan resp)
	for _, pre := range prefixes {
		opts := []clientv3.OpOption{clientv3.WithRev(rev)}
		if pre[len(pre)-1] == '/' {
			opts = append(opts, clientv3.WithPrefix())
		}
		wc := v.cli.Watch(wctx, pre, opts...)
		go func() {
			for {
				r, ok := <-wc
				select {
				case merged <- resp{r, ok}:
				case <-wctx.Done():
					return
				}
				if !ok {
					return
				}
			}
		}()
	}
	for {
		var m resp
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m = <-merged:
		}
		switch {
		case !m.ok:
			return errors.New("watch channel closed")
		case m.r.CompactRevision != 0:
			return fmt.Errorf("compacted at revision %d: %w", m.r.CompactRevision, rpctypes.ErrCompacted)
		case m.r.Canceled:
			if err := m.r.Err(); err != nil {
				return err
			}
			return errors.New("watch canceled")
		case m.r.Err() != nil:
			return m.r.Err()
		}
		if len(m.r.Events) == 0 {
			// A progress notification: with one watch of the whole
			// prefix, every event up to its revision has arrived. (Not
			// the response that says the watch was created: its
			// revision is the store's, ahead of the events to come.)
			if v.whole && m.r.IsProgressNotify() {
				v.mu.Lock()
				if r := m.r.Header.Revision; r > v.st.Rev {
					v.st.Rev = r
				}
				v.mu.Unlock()
				v.advanced()
			}
			continue
		}
		var t Touched
		v.mu.Lock()
		for _, ev := range m.r.Events {
			key := string(ev.Kv.Key)
			if ev.Kv.ModRevision > v.st.Rev {
				v.st.Rev = ev.Kv.ModRevision // a key kept or not, it has arrived
			}
			ref, ok := v.p.parse(key)
			if !ok {
				continue
			}
			c := change{key: key, ref: ref, createRev: ev.Kv.CreateRevision, modRev: ev.Kv.ModRevision}
			if ev.Type == mvccpb.PUT {
				c.val = ev.Kv.Value
				if c.val == nil {
					c.val = []byte{}
				}
			}
			if err := v.st.apply(c, &t); err != nil {
				v.log.Warn("view: cannot decode key", "key", key, "error", err)
			}
		}

		v.mu.Unlock()
		v.advanced()
		if !t.Empty() {
			v.notify(t)
		}
	}
}

// ranges is what a parser's families cover: a key, or a prefix ending in
// "/".
func (p parser) ranges() []string {
	out := make([]string, 0, len(p.fams))
	for _, fam := range p.fams {
		out = append(out, fam.prefix(p.keys))
	}
	return out
}

// read builds a State from one read of ranges (keys, and prefixes ending
// in "/"), all at one revision; p parses the keys.
func read(ctx context.Context, kv Getter, p parser, ranges []string, page int64, log *slog.Logger) (*State, error) {
	// The revision of the read, from a count of the first range: a reader
	// may be allowed its families only, not everything under the prefix.
	first, fopts := p.keys.Prefix+"/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
	if len(ranges) > 0 {
		first = ranges[0]
		if first[len(first)-1] != '/' {
			fopts = []clientv3.OpOption{clientv3.WithCountOnly()}
		}
	}
	head, err := kv.Get(ctx, first, fopts...)
	if err != nil {
		return nil, err
	}
	rev := head.Header.Revision
	st := newState()
	var t Touched
	add := func(k *mvccpb.KeyValue) {
		key := string(k.Key)
		ref, ok := p.parse(key)
		if !ok {
			return
		}
		val := k.Value
		if val == nil {
			val = []byte{}
		}
		if err := st.apply(change{key: key, ref: ref, val: val, createRev: k.CreateRevision, modRev: k.ModRevision}, &t); err != nil && log != nil {
			log.Warn("view: cannot decode key", "key", key, "error", err)
		}
	}
	for _, pre := range ranges {
		if !strings.HasSuffix(pre, "/") {
			r, err := kv.Get(ctx, pre, clientv3.WithRev(rev))
			if err != nil {
				return nil, err
			}
			for _, k := range r.Kvs {
				add(k)
			}
			continue
		}
		from, end := pre, clientv3.GetPrefixRangeEnd(pre)
		for {
			r, err := kv.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(page),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
			if err != nil {
				return nil, err
			}
			for _, k := range r.Kvs {
				add(k)
			}
			if !r.More || len(r.Kvs) == 0 {
				break
			}
			from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
		}
	}
	st.Rev = rev
	return st, nil
}

// Load builds a one-shot State of DefaultFamilies (one read at one
// revision), for deisctl.
func Load(ctx context.Context, kv Getter, prefix string) (*State, error) {
	return LoadFamilies(ctx, kv, prefix, DefaultFamilies...)
}

// LoadFamilies is Load of the families given.
func LoadFamilies(ctx context.Context, kv Getter, prefix string, fams ...Family) (*State, error) {
	p := parser{keys: state.NewKeys(prefix), fams: fams}
	return read(ctx, kv, p, p.ranges(), 500, nil)
}

// LoadFormation is a one-shot State of formation f alone, at one
// revision: its formation key, layers, config, releases, release
// statuses, routing, proxy acks, traffic and status, and the
// coordinator's advertisement (the agent API's one-off runs read it).
func LoadFormation(ctx context.Context, kv Getter, prefix, f string) (*State, error) {
	if err := state.ValidateName("formation", f); err != nil {
		return nil, err
	}
	k := state.NewKeys(prefix)
	p := parser{keys: k, fams: AllFamilies}
	return read(ctx, kv, p, []string{k.Formation(f), k.Layers(f), k.Config(f), k.Releases(f), k.ReleaseStatuses(f),
		k.Routing(f), k.AllProxyAcks(), k.AllTraffic(), k.FormationStatus(f), k.Coordinator()}, 500, nil)
}

// LoadFormationFamilies is a one-shot State of formation f's keys of the
// families given (FormationRanges), at one revision (State.Rev): all a
// reader granted only some formations' keys may read of f.
func LoadFormationFamilies(ctx context.Context, kv Getter, prefix, f string, fams ...Family) (*State, error) {
	ranges, err := FormationRanges(prefix, f, fams...)
	if err != nil {
		return nil, err
	}
	p := parser{keys: state.NewKeys(prefix), fams: fams}
	return read(ctx, kv, p, ranges, 500, nil)
}

// Sub is a subscription to a View's changes.
type Sub struct {
	// C receives a value (coalesced) whenever something was touched since
	// the last Take.
	C  <-chan struct{}
	c  chan struct{}
	v  *View
	mu sync.Mutex
	t  Touched
}

// Subscribe returns a subscription. Its first Take returns All when the
// view has been read already.
func (v *View) Subscribe() *Sub {
	c := make(chan struct{}, 1)
	s := &Sub{C: c, c: c, v: v}
	v.subsMu.Lock()
	v.subs[s] = true
	v.subsMu.Unlock()
	if v.isReady() {
		s.add(Touched{All: true})
	}
	return s
}

// Take returns what was touched since the previous Take, and consumes a
// pending wake-up (so a Take after a wake-up rarely finds nothing; it may).
func (s *Sub) Take() Touched {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.t
	s.t = Touched{}
	select {
	case <-s.c:
	default:
	}
	return t
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.v.subsMu.Lock()
	delete(s.v.subs, s)
	s.v.subsMu.Unlock()
}

func (s *Sub) add(t Touched) {
	s.mu.Lock()
	s.t.merge(t)
	s.mu.Unlock()
	select {
	case s.c <- struct{}{}:
	default:
	}
}

func (v *View) notify(t Touched) {
	v.subsMu.Lock()
	defer v.subsMu.Unlock()
	for s := range v.subs {
		s.add(t)
	}
}
