package runtime

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/testing/pkitest"
	"github.com/deis/deis/testing/poll"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
	"github.com/deis/deis/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// slugServer serves body at /slug.tgz and counts requests; gate, when set,
// holds each response until it is closed.
type slugServer struct {
	*httptest.Server
	hits atomic.Int32
	body atomic.Value // []byte
}

func newSlugServer(t *testing.T, body []byte, gate chan struct{}) *slugServer {
	s := &slugServer{}
	s.body.Store(body)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if gate != nil {
			<-gate
		}
		w.Write(s.body.Load().([]byte))
	}))
	t.Cleanup(s.Close)
	return s
}

func testSlugs(t *testing.T) (*slugs, *metrics) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return newSlugs(filepath.Join(t.TempDir(), "slugs"), http.DefaultClient, slugtar.DefaultLimits, m, slog.New(slog.DiscardHandler)), m
}

// Downloads present the node's certificate (Config.SlugTLS): a slug server
// that requires one of the platform CA serves them; without one, or with a
// certificate of another CA, it refuses and the error says why.
func TestSlugDownloadPresentsNodeCertificate(t *testing.T) {
	tgz := slugtartest.Tarball(t, slugtartest.Entry{Name: "./Procfile", Body: "web: true\n"})
	ca := pkitest.New(t)
	var who atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who.Store(pki.PeerIdentity(r))
		w.Write(tgz)
	}))
	srv.TLS = ca.ServerTLS("deis:coordinator")
	srv.StartTLS()
	defer srv.Close()
	ref := state.SlugRef{SHA256: sha(tgz), Size: int64(len(tgz))}
	get := func(cfg *tls.Config) error {
		m, _ := newMetrics(prometheus.NewRegistry())
		s := newSlugs(filepath.Join(t.TempDir(), "slugs"), pkitest.HTTPClient(cfg), slugtar.DefaultLimits, m, slog.New(slog.DiscardHandler))
		_, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref)
		return err
	}
	for name, cfg := range map[string]*tls.Config{"no certificate": ca.ClientTLS(""), "a foreign CA's certificate": ca.Foreign("deis:node-n1")} {
		if err := get(cfg); err == nil || !strings.Contains(err.Error(), "refused this client certificate") {
			t.Errorf("%s: %v, want a refusal that says what to fix", name, err)
		}
	}
	if err := get(ca.ClientTLS("deis:node-n1")); err != nil {
		t.Fatal(err)
	}
	if got := who.Load(); got != "deis:node-n1" {
		t.Errorf("the server saw %v, want the node's identity", got)
	}
}

func TestSlugDownloadAndExtract(t *testing.T) {
	tgz := slugtartest.Tarball(t,
		slugtartest.Entry{Name: "./", Type: tar.TypeDir},
		slugtartest.Entry{Name: "./Procfile", Body: "web: python3 server.py\n"},
		slugtartest.Entry{Name: "./bin/", Type: tar.TypeDir},
		slugtartest.Entry{Name: "./bin/run", Body: "#!/bin/sh\n", Mode: 0o755},
		slugtartest.Entry{Name: ".profile.d/env.sh", Body: "export X=1\n"},
		slugtartest.Entry{Name: "./current", Type: tar.TypeSymlink, Link: "/app/bin"},
		slugtartest.Entry{Name: "./run-again", Type: tar.TypeLink, Link: "./bin/run"},
	)
	srv := newSlugServer(t, tgz, nil)
	s, m := testSlugs(t)
	ref := state.SlugRef{SHA256: sha(tgz), Size: int64(len(tgz))}
	dir, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(s.dir, ref.SHA256) {
		t.Errorf("dir %s", dir)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "Procfile")); string(b) != "web: python3 server.py\n" {
		t.Errorf("Procfile: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin/run")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/run: %v %v", fi, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("slug dir must be readable by the app user: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "current")); l != "/app/bin" {
		t.Errorf("symlink: %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "run-again")); string(b) != "#!/bin/sh\n" {
		t.Errorf("hard link: %q", b)
	}
	left, _ := filepath.Glob(filepath.Join(s.dir, "*"))
	if len(left) != 1 {
		t.Errorf("temporary files left: %v", left)
	}
	if got := counterValue(t, m.slugBytes); got != float64(len(tgz)) {
		t.Errorf("downloaded bytes metric %v", got)
	}
	// Once on the node, the slug is not fetched again.
	if _, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref); err != nil {
		t.Fatal(err)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d downloads, want 1", n)
	}
}

func TestSlugSharedDownload(t *testing.T) {
	tgz := slugtartest.Tarball(t, slugtartest.Entry{Name: "./a", Body: "a"})
	gate := make(chan struct{})
	srv := newSlugServer(t, tgz, gate)
	s, _ := testSlugs(t)
	ref := state.SlugRef{SHA256: sha(tgz)}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref)
			errs <- err
		}()
	}
	// Let every caller join before the one response goes out.
	waitFor(t, "callers to join", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		fl := s.flights[ref.SHA256]
		return fl != nil && fl.waiters == 10
	})
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d downloads for 10 callers, want 1", n)
	}
}

func TestSlugChecksumMismatch(t *testing.T) {
	good := slugtartest.Tarball(t, slugtartest.Entry{Name: "./a", Body: "a"})
	bad := slugtartest.Tarball(t, slugtartest.Entry{Name: "./a", Body: "tampered"})
	srv := newSlugServer(t, bad, nil)
	s, m := testSlugs(t)
	ref := state.SlugRef{SHA256: sha(good)}
	_, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref)
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("want a sha256 error, got %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, "*")); len(left) != 0 {
		t.Errorf("a bad download must leave nothing behind: %v", left)
	}
	if got := counterValue(t, m.slugFailures); got != 1 {
		t.Errorf("failures metric %v", got)
	}
	// Within the backoff, callers get the failure without a new download.
	if _, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref); err == nil {
		t.Fatal("want the failure again")
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d downloads within the backoff, want 1", n)
	}
	// Once the server is fixed and the backoff over, the slug arrives.
	srv.body.Store(good)
	s.mu.Lock()
	s.failures[ref.SHA256].until = time.Time{}
	s.mu.Unlock()
	if _, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref); err != nil {
		t.Fatal(err)
	}
}

// TestSlugRefusesEscapes checks that a slug extraction refuses (see
// pkg/slugtar for every kind of escape) fails ensure and leaves nothing
// behind, not even the download.
func TestSlugRefusesEscapes(t *testing.T) {
	tgz := slugtartest.Tarball(t, slugtartest.Entry{Name: "../evil", Body: "x"})
	srv := newSlugServer(t, tgz, nil)
	s, _ := testSlugs(t)
	_, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", state.SlugRef{SHA256: sha(tgz)})
	if err == nil {
		t.Fatal("want an error")
	}
	parent := filepath.Dir(s.dir)
	if _, err := os.Stat(filepath.Join(parent, "evil")); err == nil {
		t.Fatal("a file escaped the slug directory")
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, "*")); len(left) != 0 {
		t.Errorf("a refused slug must leave nothing behind: %v", left)
	}
}

// A slug that expands past the limits is refused with the reason, leaves
// nothing behind, and is not downloaded again.
func TestSlugBombRefused(t *testing.T) {
	tgz := slugtartest.Tarball(t, slugtartest.Entry{Name: "./zeros", Body: strings.Repeat("\x00", 4<<20)})
	srv := newSlugServer(t, tgz, nil)
	s, m := testSlugs(t)
	s.lim = slugtar.LimitsFor(64<<10, 0)
	ref := state.SlugRef{SHA256: sha(tgz), Size: int64(len(tgz))}
	want := "runtime: extract slug " + ref.SHA256[:12] + ": slugtar: the slug expands past 512.0KB (8x --max-slug-bytes): refusing it"
	for i := 0; i < 2; i++ {
		_, err := s.ensure(context.Background(), srv.URL+"/slug.tgz", ref)
		if err == nil || err.Error() != want {
			t.Fatalf("attempt %d: %v, want %q", i, err, want)
		}
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("a refused slug was downloaded %d times", n)
	}
	if got := counterValue(t, m.slugFailures); got != 1 {
		t.Errorf("slug failures %v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, "*")); len(left) != 0 {
		t.Errorf("a refused slug must leave nothing behind: %v", left)
	}
	if fi, err := os.Stat(s.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the slug directory must be root's alone: %v %v", fi, err)
	}
}

func TestSlugRejectsBadSHA(t *testing.T) {
	s, _ := testSlugs(t)
	if _, err := s.ensure(context.Background(), "http://x/", state.SlugRef{SHA256: "../../etc"}); err == nil {
		t.Fatal("want an error for a sha that is not hex")
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.True(t, 90*time.Second, what, cond)
}

// counterValue reads a counter or gauge.
func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge: %v", &m)
	return 0
}
