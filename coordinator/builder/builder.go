package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/deis/deis/coordinator/slugstore"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults for the Config fields left zero.
const (
	DefaultStackImage   = "deis/stack:bookworm"
	DefaultTimeout      = 15 * time.Minute
	DefaultMaxSlugBytes = 1 << 30
	DefaultMaxParallel  = 2
	// DefaultKeepReleases is how many of each formation's newest releases
	// keep their slugs and images through garbage collection.
	DefaultKeepReleases = 10
	// DefaultReplicaTimeout bounds a build's wait for a second coordinator
	// to store its slug (Config.ReplicaTimeout).
	DefaultReplicaTimeout = 2 * time.Minute
	// DefaultBuildDisk is a build's scratch space (source, cache, outputs
	// and temporary files, all in /tmp of the build container).
	DefaultBuildDisk = 2 << 30
	// DefaultBuildMemory is a build's memory (besides its disk, which is
	// in memory too).
	DefaultBuildMemory = 2 << 30
	// DefaultBuildCPUs is how many CPUs a build may use.
	DefaultBuildCPUs = 1.0
	// DefaultBuildPids is how many processes and threads a build may have.
	DefaultBuildPids = 512
)

const (
	// dockerCallTimeout bounds each short Docker call.
	dockerCallTimeout = 30 * time.Second
	// copyTimeout bounds copying the source into the build container.
	copyTimeout = 5 * time.Minute
	// recordTimeout bounds writing the record of a failed build.
	recordTimeout = 10 * time.Second
	// maxErrorBytes is the most of a failure's reason kept in its record.
	maxErrorBytes = 2000
	// Label keys on build containers.
	labelRole      = "deis.role"
	labelFormation = "deis.formation"
	labelBuild     = "deis.build"
	labelBuilder   = "deis.builder" // which coordinator (data directory) made it
	roleBuild      = "build"
	roleRelease    = "release" // a release phase container
	roleImage      = "app"     // an image built from an app's Dockerfile
	// goRootMount is where the coordinator's Go toolchain appears in build
	// containers.
	goRootMount = "/opt/go"
)

// Config configures a Builder.
type Config struct {
	// DataDir is the coordinator's data directory: build logs go under
	// DataDir/builds/<formation>, build caches under DataDir/cache/<formation>,
	// the bundled buildpacks are extracted to DataDir/buildpacks and builds
	// work in DataDir/work.
	DataDir string
	Store   *state.Store
	Slugs   *slugstore.Store
	Docker  Docker
	// StackImage builds the slugs (default DefaultStackImage). It is never
	// pulled: it must exist in the local engine.
	StackImage string
	// Timeout is the build time limit (default DefaultTimeout).
	Timeout time.Duration
	// MaxSlugBytes is the largest slug accepted (default DefaultMaxSlugBytes).
	// A slug may expand to slugtar.ExpandFactor times it.
	MaxSlugBytes int64
	// MaxSlugEntries is the most entries (files, directories, links) a slug
	// may have (default slugtar.DefaultMaxEntries), as on the agents
	// (--max-slug-entries).
	MaxSlugEntries int
	// MaxParallel is how many builds, of different formations, run at once
	// (default DefaultMaxParallel). Builds of one formation always queue.
	MaxParallel int
	// GoRoot is a Go installation (GOROOT) on this host, mounted read-only
	// at /opt/go in build containers for the go buildpack; "" mounts none
	// and Go apps fail to build with a message that says so. See FindGoRoot.
	GoRoot string
	// KeepReleases is how many of each formation's newest releases keep
	// their slugs and images when GC runs (default DefaultKeepReleases).
	KeepReleases int
	// BuildDisk is the size of a build's scratch space in bytes: the
	// source, the build cache, the outputs and temporary files live on a
	// tmpfs of this size at /tmp in the build container (default
	// DefaultBuildDisk). A build that fills it fails and says so, and a
	// cache larger than it is dropped.
	BuildDisk int64
	// BuildMemory is a build container's memory limit in bytes, on top of
	// BuildDisk (default DefaultBuildMemory); release phase containers and
	// Dockerfile builds get it too.
	BuildMemory int64
	// BuildCPUs is how many CPUs a build may use (default DefaultBuildCPUs).
	BuildCPUs float64
	// BuildPids is a build container's pids limit (default DefaultBuildPids).
	BuildPids int64
	// Network is the Docker network build, release phase and Dockerfile
	// build containers join ("" = the engine's default bridge).
	Network string
	// BuildpackDirs are the directories of the coordinator under which
	// BUILDPACK_URL may name a local buildpack (--buildpack-dir); none by
	// default. .buildpacks never names local paths.
	BuildpackDirs []string
	// SlugServer is this coordinator's slug server base URL as agents reach
	// it (--slug-url); builds record it so their slugs are fetched here
	// whichever coordinator leads.
	SlugServer string
	// Replicas, when set, records every slug and image archive this
	// coordinator stores, and a build waits until a second running
	// coordinator holds its slug before it writes the release (see
	// awaitCopies); nil: slugs stay where they are built.
	Replicas Replicas
	// ReplicaTimeout bounds that wait (default DefaultReplicaTimeout).
	ReplicaTimeout time.Duration
	// AppURL returns the URL a formation answers on, for the last line of a
	// successful build.
	AppURL func(formation string) string
	// Watcher, when set, makes a push wait for its release to go live,
	// printing the rollout as it happens, and fail with the reason when
	// it does not (see awaitRollout); nil: a push ends once its release
	// is written.
	Watcher clientv3.Watcher
	// NoPushWait turns that wait off (deis-coordinator --push-wait=false);
	// a formation turns it off with the config var DEPLOY_WAIT=false.
	NoPushWait bool
	// BootTimeout is the scheduler's boot timeout (--boot-timeout,
	// default DefaultBootTimeout); a push waits at most this and a margin.
	BootTimeout time.Duration
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// TimeLimitError is the error of a build that ran out of time.
type TimeLimitError struct{ Limit time.Duration }

func (e *TimeLimitError) Error() string {
	return fmt.Sprintf("builder: build exceeded the %s time limit: make the build faster (or raise --build-timeout)", e.Limit)
}

// Builder builds slugs and turns them into releases.
type Builder struct {
	cfg                               Config
	m                                 *metrics
	slots                             chan struct{}
	buildpacks, builds, caches, works string
	instance                          string // labelBuilder value
	// margin is how long a push waits for its rollout beyond BootTimeout
	// (rolloutMargin).
	margin time.Duration

	mu    sync.Mutex
	locks map[string]chan struct{} // one-slot channel per formation

	// artifacts is read-locked by every build from the moment it starts
	// making a slug or an image until its release is written (or it
	// failed); GC runs only when it can take the write lock, so it never
	// removes what a running build is about to release.
	artifacts sync.RWMutex
}

// New checks cfg, fills in defaults and extracts the bundled buildpacks.
func New(cfg Config) (*Builder, error) {
	switch {
	case cfg.DataDir == "" || !filepath.IsAbs(cfg.DataDir):
		return nil, fmt.Errorf("builder: data directory %q must be an absolute path", cfg.DataDir)
	case cfg.Store == nil:
		return nil, errors.New("builder: no state store")
	case cfg.Slugs == nil:
		return nil, errors.New("builder: no slug store")
	case cfg.Docker == nil:
		return nil, errors.New("builder: no Docker engine: use NewDocker")
	}
	if cfg.StackImage == "" {
		cfg.StackImage = DefaultStackImage
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxSlugBytes <= 0 {
		cfg.MaxSlugBytes = DefaultMaxSlugBytes
	}
	if cfg.MaxSlugEntries <= 0 {
		cfg.MaxSlugEntries = slugtar.DefaultMaxEntries
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = DefaultMaxParallel
	}
	if cfg.BuildDisk <= 0 {
		cfg.BuildDisk = DefaultBuildDisk
	}
	if cfg.BuildMemory <= 0 {
		cfg.BuildMemory = DefaultBuildMemory
	}
	if cfg.BuildCPUs <= 0 {
		cfg.BuildCPUs = DefaultBuildCPUs
	}
	if n := float64(runtime.NumCPU()); cfg.BuildCPUs > n {
		cfg.BuildCPUs = n // the engine refuses more CPUs than the host has
	}
	if cfg.BuildPids <= 0 {
		cfg.BuildPids = DefaultBuildPids
	}
	dirs, err := checkBuildpackDirs(cfg.BuildpackDirs)
	if err != nil {
		return nil, err
	}
	cfg.BuildpackDirs = dirs
	if cfg.KeepReleases <= 0 {
		cfg.KeepReleases = DefaultKeepReleases
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.GoRoot != "" {
		real, err := checkGoRoot(cfg.GoRoot)
		if err != nil {
			return nil, err
		}
		cfg.GoRoot = real
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = DefaultBootTimeout
	}
	if cfg.AppURL == nil {
		cfg.AppURL = func(string) string { return "" }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	b := &Builder{
		cfg: cfg, m: m, slots: make(chan struct{}, cfg.MaxParallel), locks: map[string]chan struct{}{},
		buildpacks: filepath.Join(cfg.DataDir, "buildpacks"),
		builds:     filepath.Join(cfg.DataDir, "builds"),
		caches:     filepath.Join(cfg.DataDir, "cache"),
		works:      filepath.Join(cfg.DataDir, "work"),
		instance:   instanceID(cfg.DataDir),
		margin:     rolloutMargin,
	}
	for _, d := range []string{b.builds, b.caches} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("builder: %w", err)
		}
	}
	// Leftovers of builds a previous coordinator did not finish.
	if err := os.RemoveAll(b.works); err != nil {
		return nil, fmt.Errorf("builder: clean %s: %w", b.works, err)
	}
	if err := os.MkdirAll(b.works, 0o700); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	if err := extractBuildpacks(b.buildpacks); err != nil {
		return nil, err
	}
	return b, nil
}

// Build builds commit sha of the bare repository repoDir for formation f and
// releases it. Every line of output goes to out as it happens; out is flushed
// after each line if it has a Flush method. On success the build is stored
// and a release appended with the formation's current config. The error's
// text is the reason to show the pusher; a failed build releases nothing and
// is recorded as a state.Build with Failed and Error set (and no slug or
// image), so that its log can be found.
func (b *Builder) Build(ctx context.Context, f, repoDir, sha string, out io.Writer) (*state.Release, error) {
	return b.build(ctx, Request{Formation: f, Repo: repoDir, SHA: sha}, out)
}

// build builds and releases, and then, with a Watcher, waits for the
// release to go live (awaitRollout). A release that does not go live
// returns the release and a *RolloutError.
func (b *Builder) build(ctx context.Context, req Request, out io.Writer) (*state.Release, error) {
	con := newConsole(out, nil)
	rel, err := b.buildRelease(ctx, req, con)
	con.log = nil // the build log is closed
	if err != nil {
		return nil, err
	}
	// The build lock, the build slot and GC's lock are free again: the
	// wait holds nothing another push or GC needs.
	if b.cfg.Watcher != nil {
		if err := b.awaitRollout(ctx, rel, con); err != nil {
			con.Flush()
			b.cfg.Logger.Warn("release did not go live", "formation", req.Formation, "release", rel.Version, "error", err)
			return rel, err
		}
	}
	if url := b.cfg.AppURL(req.Formation); url != "" {
		con.Printf("       %s deployed to Deis", url)
	}
	con.Flush()
	return rel, nil
}

// buildRelease builds the pushed commit under the formation's build lock
// and a build slot, and appends its release.
func (b *Builder) buildRelease(ctx context.Context, req Request, con *console) (*state.Release, error) {
	f := req.Formation
	if err := state.ValidateName("formation", f); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	if !validSHA(req.SHA) {
		return nil, fmt.Errorf("builder: %q is not a full commit sha", req.SHA)
	}
	r, err := openRepo(req.Repo, req.Quarantine)
	if err != nil {
		return nil, err
	}

	unlock, err := b.lock(ctx, f, con)
	if err != nil {
		return nil, fmt.Errorf("builder: gave up waiting for the running build of %s: %w", f, err)
	}
	defer unlock()
	// Under the lock, which Purge and Claim take too: a push accepted for an
	// incarnation of f that was destroyed since builds nothing here.
	if err := b.cfg.Store.CheckIncarnation(ctx, f); err != nil {
		return nil, err
	}
	select {
	case b.slots <- struct{}{}:
	default:
		con.Printf("-----> %d builds are running; waiting for a free build slot...", b.cfg.MaxParallel)
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("builder: gave up waiting for a build slot: %w", ctx.Err())
		}
	}
	defer func() { <-b.slots }()
	b.m.running.Inc()
	defer b.m.running.Dec()

	start := time.Now()
	id := buildID(start, req.SHA)
	log := b.cfg.Logger.With("formation", f, "build", id)
	logFile, err := b.openLog(f, id)
	if err != nil {
		log.Warn("cannot write build log", "error", err)
	} else {
		defer logFile.Close()
		con.log = logFile
	}
	log.Info("build started", "sha", req.SHA)

	rel, err := b.run(ctx, id, r, req, con)
	con.Flush()
	b.m.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		result := "failed"
		if tl := (*TimeLimitError)(nil); errors.As(err, &tl) {
			result = "timeout"
		}
		b.m.builds.WithLabelValues(result).Inc()
		if logFile != nil {
			fmt.Fprintf(logFile, "build failed: %v\n", err)
		}
		log.Warn("build failed", "error", err)
		b.recordFailure(ctx, state.Build{ID: id, Formation: f, GitSHA: req.SHA, Failed: true,
			Error: failureReason(err), Created: time.Now().UTC()}, log)
		return nil, err
	}
	b.m.builds.WithLabelValues("succeeded").Inc()
	log.Info("build released", "release", rel.Version)
	return rel, nil
}

// recordFailure stores a failed build at its build key, so that deisctl
// builds lists it and its log can be found. It writes only while the
// formation exists and the key is free: a build whose release went through
// before an error keeps its record. A failure to write is only logged.
func (b *Builder) recordFailure(ctx context.Context, build state.Build, log *slog.Logger) {
	s := b.cfg.Store
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	fkey, bkey := s.Keys.Formation(build.Formation), s.Keys.Build(build.Formation, build.ID)
	guards := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(fkey), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(bkey), "=", 0),
	}
	if inc := state.IncarnationOf(ctx, build.Formation); inc != 0 {
		guards = append(guards, s.SameIncarnation(build.Formation, inc)) // not into a formation created since
	}
	ok, err := s.Commit(wctx, guards, clientv3.OpPut(bkey, state.Marshal(build)))
	switch {
	case err != nil:
		log.Warn("cannot record the failed build", "error", err)
	case !ok:
		log.Debug("failed build not recorded: the formation is gone or the build is recorded already")
	}
}

// failureReason is the reason a failed build's record gives: the error
// without the package prefix, cut to maxErrorBytes.
func failureReason(err error) string {
	msg := strings.TrimPrefix(err.Error(), "builder: ")
	if len(msg) > maxErrorBytes {
		cut := maxErrorBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	return msg
}

// lock takes formation f's build lock, waiting (and saying so) while another
// build of f holds it.
func (b *Builder) lock(ctx context.Context, f string, con *console) (func(), error) {
	b.mu.Lock()
	ch, ok := b.locks[f]
	if !ok {
		ch = make(chan struct{}, 1)
		b.locks[f] = ch
	}
	b.mu.Unlock()
	unlock := func() { <-ch }
	select {
	case ch <- struct{}{}:
		return unlock, nil
	default:
	}
	con.Printf("-----> Another build of %s is running; waiting...", f)
	select {
	case ch <- struct{}{}:
		return unlock, nil
	case <-ctx.Done():
		return func() {}, ctx.Err()
	}
}

// buildID is unique per formation (builds of one formation never overlap)
// and sorts by start time.
func buildID(t time.Time, sha string) string {
	t = t.UTC()
	return fmt.Sprintf("b%s%06d-%s", t.Format("20060102150405"), t.Nanosecond()/1000, sha[:7])
}

func (b *Builder) openLog(f, id string) (*os.File, error) {
	dir := filepath.Join(b.builds, f)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o640)
}

// run does the build proper, under the formation lock and a build slot.
func (b *Builder) run(ctx context.Context, id string, r repo, req Request, con *console) (*state.Release, error) {
	f, sha7 := req.Formation, req.SHA[:7]
	form, _, err := b.cfg.Store.GetFormation(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	// Builds and the release phase run as the formation's own uid, as its
	// apps do.
	req.uid = form.AppUID()
	bctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	overTime := func(err error) error {
		if errors.Is(bctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			return &TimeLimitError{Limit: b.cfg.Timeout}
		}
		return err
	}

	if err := r.checkCommit(bctx, req.SHA); err != nil {
		return nil, overTime(err)
	}
	types, hasProcfile, err := r.procfile(bctx, req.SHA)
	if err != nil {
		return nil, overTime(err)
	}
	vars, _, err := b.readConfig(bctx, f)
	if err != nil {
		return nil, overTime(err)
	}
	dotBuildpacks, hasDotBuildpacks, err := r.readFile(bctx, req.SHA, ".buildpacks", 64<<10)
	if err != nil {
		return nil, overTime(err)
	}
	hasDockerfile, err := r.hasFile(bctx, req.SHA, "Dockerfile")
	if err != nil {
		return nil, overTime(err)
	}
	plan, err := chooseBuild(vars, dotBuildpacks, hasDotBuildpacks, hasDockerfile, b.buildpacks, b.cfg.BuildpackDirs)
	if err != nil {
		return nil, err
	}

	work := filepath.Join(b.works, id)
	defer os.RemoveAll(work)

	// From here until the release is written, GC leaves new slugs and
	// images alone.
	b.artifacts.RLock()
	defer b.artifacts.RUnlock()

	var build *state.Build
	if plan.mode == modeDockerfile {
		con.Printf("-----> Building %s of %s from its Dockerfile", sha7, f)
		build, err = b.buildImage(bctx, id, r, req, types, hasProcfile, con)
	} else {
		con.Printf("-----> Building %s of %s on %s", sha7, f, b.cfg.StackImage)
		if plan.reason != "" {
			con.Printf("-----> Using the buildpacks given, as %s: %s", plan.reason, strings.Join(plan.labels(), ", "))
		}
		build, err = b.buildSlug(bctx, ctx, id, r, req, plan, vars, types, hasProcfile, work, con)
	}
	if err != nil {
		return nil, overTime(err)
	}
	build.SlugServer = b.cfg.SlugServer
	// The other coordinators start fetching it while the release phase runs.
	if err := b.holdArtifact(bctx, build); err != nil {
		return nil, overTime(err)
	}

	if cmd, ok := build.ProcessTypes[releaseType]; ok {
		if err := b.releasePhase(bctx, ctx, id, req.uid, build, cmd, work, con); err != nil {
			return nil, overTime(err)
		}
	}
	if err := b.awaitCopies(bctx, build, con); err != nil {
		return nil, overTime(err)
	}

	rel, err := b.release(bctx, *build, "Deploy "+sha7)
	if err != nil {
		return nil, overTime(err)
	}
	con.Printf("-----> Launching... done, v%d", rel.Version)
	return rel, nil
}

// buildSlug runs the buildpacks in a build container and stores the slug.
func (b *Builder) buildSlug(bctx, ctx context.Context, id string, r repo, req Request, plan buildPlan, vars, types map[string]string, hasProcfile bool, work string, con *console) (*state.Build, error) {
	f := req.Formation
	dirs := buildDirs{env: filepath.Join(work, "env"), in: filepath.Join(work, "in")}
	if err := dirs.prepare(vars, con); err != nil {
		return nil, err
	}
	if err := plan.writeInstructions(dirs.in); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	var build *state.Build
	err := b.inBuildContainer(bctx, ctx, id, req, plan, dirs, func(s *sandbox) error {
		if err := b.runBuild(bctx, s, r, req, con); err != nil {
			return err
		}
		var err error
		if build, err = b.collect(bctx, s, id, req, types, hasProcfile, con); err != nil {
			return err
		}
		b.saveCache(bctx, s, f, con)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return build, nil
}

// collect reads the outputs of a successful build out of its container and
// stores the slug.
func (b *Builder) collect(bctx context.Context, s *sandbox, id string, req Request, types map[string]string, hasProcfile bool, con *console) (*state.Build, error) {
	out, err := s.readSmall(bctx, "buildpack")
	if err != nil {
		return nil, err
	}
	buildpack := strings.TrimSpace(out)
	con.Printf("-----> Discovering process types")
	if hasProcfile {
		con.Printf("       Procfile declares types -> %s", strings.Join(slices.Sorted(maps.Keys(types)), ", "))
	} else {
		release, err := s.readSmall(bctx, "release.yml")
		if err != nil {
			return nil, err
		}
		types, err = parseDefaultProcessTypes(release)
		if err != nil {
			return nil, fmt.Errorf("builder: the %s buildpack's bin/release printed invalid YAML: %w", buildpack, err)
		}
		if len(types) > 0 {
			con.Printf("       Default types for buildpack -> %s", strings.Join(slices.Sorted(maps.Keys(types)), ", "))
		}
	}
	if err := checkTypes(types); err != nil {
		return nil, err
	}

	// The slug streams into the store, which keeps it only if it is whole,
	// within the limit and one the nodes will extract (checkSlug).
	var ref state.SlugRef
	err = s.readOutput(bctx, "slug.tgz", b.cfg.MaxSlugBytes, func(r io.Reader) error {
		var err error
		ref, err = b.putChecked(bctx, r)
		return err
	})
	var refused *slugError
	switch {
	case errors.As(err, &refused):
		return nil, refused
	case errors.Is(err, errNoOutput):
		return nil, errors.New("builder: the build made no slug")
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("builder: the slug is more than the %s limit: remove large files from the repository or the build (or raise --max-slug-bytes)",
			state.HumanBytes(b.cfg.MaxSlugBytes))
	case err != nil && bctx.Err() != nil:
		return nil, bctx.Err()
	case err != nil && strings.HasPrefix(err.Error(), "builder:"):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("builder: store the slug: %w", err)
	}
	con.Printf("-----> Compressing... done, %s", state.HumanBytes(ref.Size))
	b.m.slugSize.Observe(float64(ref.Size))
	return &state.Build{
		ID: id, Formation: req.Formation, GitSHA: req.SHA, Slug: &ref, Image: b.cfg.StackImage,
		ProcessTypes: types, Buildpack: buildpack, Created: time.Now().UTC(),
	}, nil
}

// checkTypes makes sure a build has something to run.
func checkTypes(types map[string]string) error {
	for t := range types {
		if t != releaseType {
			return nil
		}
	}
	return errors.New(`builder: the app declares no process types: add a Procfile such as "web: python3 server.py", commit and push again`)
}

// readConfig returns formation f's config vars and the config key's
// ModRevision (0 when the formation has no config yet).
func (b *Builder) readConfig(ctx context.Context, f string) (map[string]string, int64, error) {
	var c state.Config
	rev, err := b.cfg.Store.Get(ctx, b.cfg.Store.Keys.Config(f), &c)
	if errors.Is(err, state.ErrNotFound) {
		return map[string]string{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("builder: read config of %s: %w", f, err)
	}
	if c.Vars == nil {
		c.Vars = map[string]string{}
	}
	return c.Vars, rev, nil
}

// release stores the build and appends a release of it with the current
// config, in one transaction that fails if the config changed since it was
// read (AppendRelease then retries with the new config).
func (b *Builder) release(ctx context.Context, build state.Build, desc string) (*state.Release, error) {
	s, f := b.cfg.Store, build.Formation
	rel, err := s.AppendRelease(ctx, f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		vars, rev, err := b.readConfig(ctx, f)
		if err != nil {
			return nil, nil, nil, err
		}
		cfgKey := s.Keys.Config(f)
		guard := clientv3.Compare(clientv3.ModRevision(cfgKey), "=", rev)
		if rev == 0 {
			guard = clientv3.Compare(clientv3.CreateRevision(cfgKey), "=", 0)
		}
		bcopy := build
		return &state.Release{Build: &bcopy, Config: vars, Description: desc},
			[]clientv3.Cmp{guard},
			[]clientv3.Op{clientv3.OpPut(s.Keys.Build(f, build.ID), state.Marshal(build))}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("builder: release the build: %w", err)
	}
	return rel, nil
}

// buildDirs are the host directories the coordinator writes and mounts
// read-only into a build container.
type buildDirs struct{ env, in string }

// prepare creates the directories and writes one file per config var into
// env.
func (d buildDirs) prepare(vars map[string]string, con *console) error {
	for _, dir := range []string{d.env, d.in} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("builder: %w", err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if state.ValidateEnvKey(k) != nil {
			con.Printf(" !     Skipping config var %q: not a valid environment variable name", k)
			continue
		}
		if err := os.WriteFile(filepath.Join(d.env, k), []byte(vars[k]), 0o644); err != nil {
			return fmt.Errorf("builder: %w", err)
		}
	}
	return nil
}

// limits are the resource limits of build and release phase containers:
// their /tmp is in memory, so the memory limit covers BuildDisk too.
func (b *Builder) limits() Limits {
	return Limits{
		Memory:    b.cfg.BuildMemory + b.cfg.BuildDisk,
		NanoCPUs:  int64(b.cfg.BuildCPUs * 1e9),
		PidsLimit: b.cfg.BuildPids,
	}
}

// scratchTmpfs is the tmpfs at /tmp of build and release phase containers.
func (b *Builder) scratchTmpfs() map[string]string {
	return map[string]string{scratchDir: fmt.Sprintf("rw,exec,nosuid,nodev,size=%d,mode=1777", b.cfg.BuildDisk)}
}

// inBuildContainer starts a build container of the stack image and calls fn
// with it while it runs; the container is always removed. bctx carries the
// build's time limit; ctx, which outlives it, is used to remove the
// container.
func (b *Builder) inBuildContainer(bctx, ctx context.Context, id string, req Request, plan buildPlan, dirs buildDirs, fn func(*sandbox) error) error {
	b.removeLeftovers(ctx, req.Formation)
	binds := []string{
		b.buildpacks + ":/buildpacks:ro",
		dirs.env + ":/env:ro",
		dirs.in + ":/in:ro",
	}
	for _, bp := range plan.buildpacks {
		if bp.Bind != "" {
			binds = append(binds, bp.Bind)
		}
	}
	if b.cfg.GoRoot != "" {
		binds = append(binds, b.cfg.GoRoot+":"+goRootMount+":ro")
	}
	spec := ContainerSpec{
		Name:  "deis-build-" + req.Formation + "-" + id,
		Image: b.cfg.StackImage,
		// The container idles while the builder runs the build and the
		// copies in it: its /tmp lives as long as it does.
		Cmd:     []string{"sleep", "infinity"},
		User:    userSpec(req.uid),
		WorkDir: scratchDir,
		// The uid has no entry in the stack's /etc/passwd: HOME, USER and
		// LOGNAME say what tools would look up there (Python's
		// getpass.getuser reads LOGNAME, pip and go keep caches in HOME).
		Env:            append([]string{"STACK=" + b.cfg.StackImage, "SOURCE_VERSION=" + req.SHA}, userEnv(req.uid, scratchDir)...),
		Binds:          binds,
		Labels:         map[string]string{labelRole: roleBuild, labelFormation: req.Formation, labelBuild: id, labelBuilder: b.instance},
		Tmpfs:          b.scratchTmpfs(),
		ReadonlyRootfs: true,
		Init:           true,
		Network:        b.cfg.Network,
		Limits:         b.limits(),
	}
	d := b.cfg.Docker
	cid, err := b.create(bctx, ctx, spec)
	if err != nil {
		return fmt.Errorf("builder: the build container: %w", err)
	}
	defer b.remove(ctx, cid, req.Formation)
	cctx, cancel := context.WithTimeout(bctx, dockerCallTimeout)
	err = d.Start(cctx, cid)
	cancel()
	if err != nil {
		if bctx.Err() != nil {
			return bctx.Err()
		}
		return fmt.Errorf("builder: start the build container: %w", err)
	}
	return fn(&sandbox{d: d, cid: cid, user: userSpec(req.uid)})
}

// runBuild copies the source and the cache into the build container and
// runs build.sh there, streaming its output to con.
func (b *Builder) runBuild(bctx context.Context, s *sandbox, r repo, req Request, con *console) error {
	cctx, cancel := context.WithTimeout(bctx, copyTimeout)
	err := r.archive(cctx, req.SHA, path.Base(sourceDir)+"/", func(tar io.Reader) error {
		return s.copyIn(cctx, scratchDir, tar)
	})
	cancel()
	if err != nil {
		if bctx.Err() != nil {
			return bctx.Err()
		}
		if s.diskFull(bctx) {
			return b.diskError("the pushed source does not fit")
		}
		return fmt.Errorf("builder: copy the source into the build container: %w", err)
	}
	b.restoreCache(bctx, s, req.Formation, con)

	out := &spotter{w: con}
	code, err := s.exec(bctx, []string{"/bin/bash", "-c", buildScript, "deis-build"}, nil, out, out)
	con.Flush()
	if err != nil {
		if bctx.Err() != nil {
			return bctx.Err()
		}
		return fmt.Errorf("builder: the build container: %w", err)
	}
	if code == 0 {
		return nil
	}
	why, err := s.readSmall(bctx, "failure")
	if err != nil {
		return err
	}
	why = strings.TrimSpace(why)
	if out.full || s.diskFull(bctx) {
		return b.diskError(why)
	}
	if why != "" {
		return fmt.Errorf("builder: %s", why)
	}
	if code == 137 {
		return fmt.Errorf("builder: the build was killed (exit 137): it may have run out of its %s of memory (--build-memory)", state.HumanBytes(b.cfg.BuildMemory))
	}
	return fmt.Errorf("builder: the build exited with status %d: see the output above", code)
}

// diskError is the error of a build that filled its scratch space; why,
// if any, is what failed.
func (b *Builder) diskError(why string) error {
	if why != "" {
		why = " (" + why + ")"
	}
	return fmt.Errorf("builder: the build ran out of its %s of disk (--build-disk)%s: make the app, its dependencies and its cache smaller, or raise --build-disk",
		state.HumanBytes(b.cfg.BuildDisk), why)
}

// create makes a container from spec within bctx.
func (b *Builder) create(bctx, ctx context.Context, spec ContainerSpec) (string, error) {
	cctx, cancel := context.WithTimeout(bctx, dockerCallTimeout)
	defer cancel()
	cid, err := b.cfg.Docker.Create(cctx, spec)
	if err != nil {
		if bctx.Err() != nil {
			return "", bctx.Err()
		}
		return "", fmt.Errorf("create a container of %s (is the image there? make stack): %w", spec.Image, err)
	}
	return cid, nil
}

// remove removes container cid with ctx, which outlives the build's limit.
func (b *Builder) remove(ctx context.Context, cid, f string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerCallTimeout)
	defer cancel()
	if err := b.cfg.Docker.Remove(rctx, cid); err != nil {
		b.cfg.Logger.Warn("cannot remove container", "formation", f, "container", cid, "error", err)
	}
}

// runStreaming creates a container from spec, starts it, copies its output
// to out and returns its exit status.
// The container is always removed. bctx bounds the run; ctx, which
// outlives it, is used for the removal.
func (b *Builder) runStreaming(bctx, ctx context.Context, spec ContainerSpec, out io.Writer) (int, error) {
	d := b.cfg.Docker
	cid, err := b.create(bctx, ctx, spec)
	if err != nil {
		return 0, err
	}
	defer b.remove(ctx, cid, spec.Labels[labelFormation])
	cctx, cancel := context.WithTimeout(bctx, dockerCallTimeout)
	err = d.Start(cctx, cid)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("start: %w", err)
	}
	logs, err := d.Logs(bctx, cid)
	if err != nil {
		return 0, fmt.Errorf("follow the output: %w", err)
	}
	_, _ = io.Copy(out, logs) // ends when the container exits or bctx does
	logs.Close()
	if f, ok := out.(interface{ Flush() }); ok {
		f.Flush()
	}
	if err := bctx.Err(); err != nil {
		return 0, err
	}
	// The output ends when the container exits; wait (within the limit)
	// for its status.
	code, err := d.Wait(bctx, cid)
	if err != nil {
		return 0, fmt.Errorf("wait: %w", err)
	}
	return code, nil
}

// instanceID names the coordinator that owns build containers by its data
// directory: one coordinator serves a data directory at a time (see
// ListenUnix), while several may share a Docker engine.
func instanceID(dataDir string) string {
	sum := sha256.Sum256([]byte(dataDir))
	return hex.EncodeToString(sum[:6])
}

// removeLeftovers removes build containers of formation f that this
// coordinator (or an earlier run of it on the same data directory) left
// behind when it crashed; the caller holds f's build lock, so none of them
// belongs to a running build.
func (b *Builder) removeLeftovers(ctx context.Context, f string) {
	lctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	for _, role := range []string{roleBuild, roleRelease} {
		ids, err := b.cfg.Docker.List(lctx, map[string]string{labelRole: role, labelFormation: f, labelBuilder: b.instance})
		if err != nil {
			b.cfg.Logger.Warn("cannot list build containers", "formation", f, "error", err)
			return
		}
		for _, cid := range ids {
			b.cfg.Logger.Info("removing leftover container", "formation", f, "container", cid, "role", role)
			if err := b.cfg.Docker.Remove(lctx, cid); err != nil {
				b.cfg.Logger.Warn("cannot remove build container", "formation", f, "container", cid, "error", err)
			}
		}
	}
}

// userSpec is the container user of a build or release phase of a
// formation whose apps run as uid (state.Formation.AppUID): that uid and
// gid, numeric, never the stack's app user (1000), which a host account may
// have.
func userSpec(uid int) string {
	u := strconv.Itoa(uid)
	return u + ":" + u
}

// userEnv are the variables that stand in for the passwd entry a
// formation's uid does not have.
func userEnv(uid int, home string) []string {
	name := "u" + strconv.Itoa(uid)
	return []string{"HOME=" + home, "USER=" + name, "LOGNAME=" + name}
}
