package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
)

var validSHA = regexp.MustCompile(`^[0-9a-f]{64}$`)

// refusedFor is how long a slug refused for its size stays refused without
// a new download: for the agent's life.
const refusedFor = 100 * 365 * 24 * time.Hour

// slugs downloads, verifies and extracts slugs under dir, once per slug
// even when many containers need one at the same time.
type slugs struct {
	dir  string
	http *http.Client // presents the node's certificate (Config.SlugTLS)
	lim  slugtar.Limits
	m    *metrics
	log  *slog.Logger

	// holders, when set, returns the URLs of the coordinators that hold a
	// slug now (state.Store.SlugURLs): where a download goes when the URL
	// in the databag fails.
	holders func(ctx context.Context, sha string) ([]string, error)

	mu       sync.Mutex
	flights  map[string]*flight
	failures map[string]*failure
}

// flight is one download and extraction that callers share.
type flight struct {
	done    chan struct{}
	err     error
	waiters int
	// cancelled is set once every caller left and the flight was cancelled.
	cancelled bool
	cancel    context.CancelFunc
}

// failure holds back the next attempt for a slug that just failed.
type failure struct {
	bo    backoff.Backoff
	until time.Time
	err   error
}

func newSlugs(dir string, hc *http.Client, lim slugtar.Limits, m *metrics, log *slog.Logger) *slugs {
	return &slugs{dir: dir, http: hc, lim: lim, m: m, log: log, flights: map[string]*flight{}, failures: map[string]*failure{}}
}

// ensure returns the directory of the extracted slug, downloading it from
// url first when it is not on the node yet. Concurrent callers for one
// slug share one download; the download stops when every caller has left.
// After a failure, calls within the backoff return that failure at once.
func (s *slugs) ensure(ctx context.Context, url string, ref state.SlugRef) (string, error) {
	if !validSHA.MatchString(ref.SHA256) {
		return "", fmt.Errorf("runtime: invalid slug sha256 %q in the runtime databag: the coordinator must name slugs by 64 lowercase hex digits", ref.SHA256)
	}
	dir := filepath.Join(s.dir, ref.SHA256)
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return dir, nil
	}
	if err := s.share(ctx, ref.SHA256, func(ctx context.Context) error { return s.fetchAndExtract(ctx, url, ref) }); err != nil {
		return "", err
	}
	return dir, nil
}

// share runs work once for all the concurrent callers with the same key:
// the first starts it, the others wait for its outcome. It stops (its
// context is cancelled) when every caller has left. A failure is returned
// at once to the callers that come within its backoff. work must do
// nothing when what it makes is already there.
func (s *slugs) share(ctx context.Context, key string, work func(ctx context.Context) error) error {
	s.mu.Lock()
	if f := s.failures[key]; f != nil && time.Now().Before(f.until) {
		err := f.err
		s.mu.Unlock()
		return err
	}
	fl := s.flights[key]
	if fl != nil && fl.cancelled {
		// Every caller of that flight left; it is winding down. Wait for it
		// rather than write the same files twice, then try again.
		s.mu.Unlock()
		select {
		case <-fl.done:
			return s.share(ctx, key, work)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fl == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		fl = &flight{done: make(chan struct{}), cancel: cancel}
		s.flights[key] = fl
		go s.fetch(fctx, fl, key, work)
	}
	fl.waiters++
	s.mu.Unlock()

	select {
	case <-fl.done:
		s.leave(fl)
		return fl.err
	case <-ctx.Done():
		s.leave(fl)
		return ctx.Err()
	}
}

// leave drops one caller from a flight and cancels it when none is left.
func (s *slugs) leave(fl *flight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fl.waiters--
	if fl.waiters == 0 {
		fl.cancelled = true
		fl.cancel()
	}
}

// fetch runs one flight and records its outcome.
func (s *slugs) fetch(ctx context.Context, fl *flight, key string, work func(ctx context.Context) error) {
	err := work(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	fl.err = err
	delete(s.flights, key)
	switch {
	case err == nil:
		delete(s.failures, key)
	case ctx.Err() == nil: // a real failure, not every caller leaving
		s.m.slugFailures.Inc()
		f := s.failures[key]
		if f == nil {
			f = &failure{bo: backoff.Backoff{Min: time.Second, Max: time.Minute}}
			s.failures[key] = f
		}
		f.err = err
		f.until = time.Now().Add(f.bo.Next())
		if errors.Is(err, slugtar.ErrTooLarge) {
			// The slug's content decides; it is refused for good (until
			// the agent restarts, perhaps with other limits).
			f.until = time.Now().Add(refusedFor)
		}
	}
	fl.cancel()
	close(fl.done)
}

func (s *slugs) fetchAndExtract(ctx context.Context, url string, ref state.SlugRef) error {
	dir := filepath.Join(s.dir, ref.SHA256)
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil // extracted by a flight that ended as this one began
	}
	tgz := filepath.Join(s.dir, ref.SHA256+".tgz")
	if err := s.download(ctx, "slug", url, ref, tgz); err != nil {
		return err
	}
	if err := slugtar.ExtractLimited(ctx, tgz, dir, s.lim); err != nil {
		os.Remove(tgz) // fetch it again next time rather than trust it
		return fmt.Errorf("runtime: extract slug %s: %w", short(ref.SHA256), err)
	}
	os.Remove(tgz)
	s.log.Info("slug ready", "slug", short(ref.SHA256), "dir", dir)
	return nil
}

// download makes sure dst (in the slug directory) holds ref: it keeps a
// copy already there whose sha256 matches, or else fetches it to dst
// through a temporary file and keeps it only when its sha256 (and size,
// when known) match ref. It tries url (the databag's) first, then, when
// that fails, the other coordinators that hold the file now (read from
// etcd), each verified the same way. what names the file in errors
// ("slug", "image archive").
func (s *slugs) download(ctx context.Context, what, url string, ref state.SlugRef, dst string) error {
	// Only root reads the slugs on the node: apps see theirs at /app,
	// through the bind mount, and no host account sees any.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("runtime: slug directory: %w", err)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("runtime: slug directory: %w", err)
	}
	if verifyFile(dst, ref.SHA256) == nil {
		return nil
	}
	var errs []error
	for _, u := range s.sources(ctx, url, ref.SHA256) {
		err := s.downloadFrom(ctx, what, u, ref, dst)
		if err == nil {
			if u != url {
				s.log.Info("downloaded from another coordinator", "what", what, "slug", short(ref.SHA256), "url", u, "recorded", url)
			}
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
	}
	switch len(errs) {
	case 0:
		return fmt.Errorf("runtime: %s %s is not on this node, the databag has no URL for it and no running coordinator holds it: check the coordinator's --slug-url", what, short(ref.SHA256))
	case 1:
		return errs[0]
	}
	rest := make([]string, 0, len(errs)-1)
	for _, err := range errs[1:] {
		rest = append(rest, err.Error())
	}
	return fmt.Errorf("runtime: no coordinator served %s %s: %w; %s", what, short(ref.SHA256), errs[0], strings.Join(rest, "; "))
}

// sources orders where to download sha from: the databag's url while its
// coordinator is among the live holders (or nothing is known about them),
// the other live holders (state.Store.SlugURLs) next, and url last when
// its coordinator is not live any more, so a lost coordinator delays
// nothing.
func (s *slugs) sources(ctx context.Context, url, sha string) []string {
	var live []string
	if s.holders != nil {
		var err error
		if live, err = s.holders(ctx, sha); err != nil {
			s.log.Warn("cannot read the holders of a slug; trying its recorded URL only", "slug", short(sha), "error", err)
			live = nil
		}
	}
	urlLive := len(live) == 0 || slices.Contains(live, url)
	var out []string
	if url != "" && urlLive {
		out = append(out, url)
	}
	for _, u := range live {
		if u != url {
			out = append(out, u)
		}
	}
	if url != "" && !urlLive {
		out = append(out, url)
	}
	return out
}

// downloadFrom fetches url to dst, verified against ref (see download).
func (s *slugs) downloadFrom(ctx context.Context, what, url string, ref state.SlugRef, dst string) error {
	start := time.Now()
	tmp := dst + ".tmp"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("runtime: %s URL %q: %w", what, url, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("runtime: download %s %s: %w: check that the coordinator's slug server is reachable from this node", what, short(ref.SHA256), pki.Explain(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("runtime: download %s %s from %s: %s: the slug server refused this node's certificate (%s); check the node's credentials", what, short(ref.SHA256), url, resp.Status, strings.TrimSpace(string(msg)))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("runtime: download %s %s from %s: %s: check the coordinator's slug server (was the release's %s garbage-collected? deploy again)", what, short(ref.SHA256), url, resp.Status, what)
	}
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("runtime: %s download file: %w", what, err)
	}
	defer os.Remove(tmp) // after the rename, a no-op
	h := sha256.New()
	var body io.Reader = resp.Body
	if ref.Size > 0 {
		body = io.LimitReader(body, ref.Size+1)
	}
	n, err := io.Copy(io.MultiWriter(f, h), body)
	s.m.slugBytes.Add(float64(n))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("runtime: download %s %s: %w", what, short(ref.SHA256), err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != ref.SHA256 {
		return fmt.Errorf("runtime: %s %s from %s has sha256 %s (%d bytes): the download is corrupt or the slug server serves another file; will retry", what, short(ref.SHA256), url, got, n)
	}
	if ref.Size > 0 && n != ref.Size {
		return fmt.Errorf("runtime: %s %s from %s has %d bytes, want %d; will retry", what, short(ref.SHA256), url, n, ref.Size)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("runtime: %s download file: %w", what, err)
	}
	s.m.slugSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// verifyFile checks that the file at p has the given sha256.
func verifyFile(p, sha string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != sha {
		return errors.New("sha256 mismatch")
	}
	return nil
}

// short abbreviates a sha256 for messages.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
