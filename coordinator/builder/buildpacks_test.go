package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/deis/deis/testing/poll"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/launcher"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
)

// loadApp reads a sample app of testing/apps as files for gitRepo.
func loadApp(t *testing.T, name string) map[string]string {
	t.Helper()
	root := filepath.Join("..", "..", "testing", "apps", name)
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(body)
		return nil
	})
	if err != nil {
		t.Fatalf("sample app %s: %v", name, err)
	}
	return files
}

// with returns files plus more.
func with(files map[string]string, more map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range files {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// slugFile returns the content of one file of a release's slug.
func slugFile(t *testing.T, e *env, rel *state.Release, name string) (string, bool) {
	t.Helper()
	if rel.Build == nil || rel.Build.Slug == nil {
		t.Fatalf("release v%d has no slug", rel.Version)
	}
	path, _ := e.slugs.Path(rel.Build.Slug.SHA256)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, _ := io.ReadAll(tr)
			return string(b), true
		}
	}
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// runWeb runs a release's web process the way the agent does (the slug
// extracted read-only at /app and run by the launcher as the formation's
// uid, or
// the image with /bin/sh -c) and returns its base URL.
func runWeb(t *testing.T, e *env, rel *state.Release) string {
	t.Helper()
	cmd := rel.Build.ProcessTypes["web"]
	args := []string{"run", "-d", "-p", "127.0.0.1::5000", "-e", "PORT=5000", "-e", "DYNO=web.1"}
	for k, v := range rel.Config {
		args = append(args, "-e", k+"="+v)
	}
	if rel.Build.Slug != nil {
		app := filepath.Join(t.TempDir(), "app")
		path, _ := e.slugs.Path(rel.Build.Slug.SHA256)
		if err := slugtar.Extract(context.Background(), path, app); err != nil {
			t.Fatal(err)
		}
		uid := userSpec(e.appUID(rel.Build.Formation))
		args = append(args, "-v", app+":/app:ro", "-u", uid, "-w", "/app", "-e", "HOME=/app",
			"-e", "DEIS_COMMAND="+cmd, "--entrypoint", "/bin/bash", rel.Build.Image, "-c", launcher.Slug)
	} else {
		args = append(args, "--entrypoint", "/bin/sh", rel.Build.Image, "-c", cmd)
	}
	id := docker(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", id).CombinedOutput()
			t.Logf("web container output:\n%s", out)
		}
		exec.Command("docker", "rm", "-f", id).Run()
	})
	addr := docker(t, "port", id, "5000/tcp")
	addr = strings.Split(addr, "\n")[0]
	return "http://" + addr
}

// get fetches url, retrying until the app answers (Docker's port proxy
// accepts connections before the app listens).
func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	var (
		code int
		body string
		hdr  http.Header
	)
	// polling an app that is starting
	poll.Until(t, time.Minute, "GET "+url+" to answer", func() (bool, string) {
		resp, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, body, hdr = resp.StatusCode, string(b), resp.Header
		return true, ""
	})
	return code, body, hdr
}

func mustBuild(t *testing.T, e *env, f, bare, sha string) (*state.Release, string) {
	t.Helper()
	var out bytes.Buffer
	rel, err := e.b.Build(context.Background(), f, bare, sha, &out)
	t.Logf("build output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return rel, out.String()
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

// Each bundled buildpack builds its sample app without network, and the
// app runs the way the agent runs it.
func TestBundledBuildpacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	if e.b.cfg.GoRoot == "" {
		t.Fatal("no Go toolchain found for the go buildpack")
	}
	ctx := context.Background()

	t.Run("python", func(t *testing.T) {
		e.createFormation("py")
		e.store.Put(ctx, e.store.Keys.Config("py"), state.Config{Vars: map[string]string{"GREETING": "hi"}})
		bare, sha, _ := gitRepo(t, loadApp(t, "python-app"))
		rel, out := mustBuild(t, e, "py", bare, sha)
		wantLines(t, out, "-----> Python app detected", "No packages to install", "Default types for buildpack -> web")
		if rel.Build.Buildpack != "Python" || rel.Build.ProcessTypes["web"] != "python3 app.py" {
			t.Errorf("build = %+v", rel.Build)
		}
		if _, ok := slugFile(t, e, rel, ".profile.d/python.sh"); !ok {
			t.Error("slug lacks .profile.d/python.sh")
		}
		code, body, _ := get(t, runWeb(t, e, rel)+"/")
		// PYTHONUNBUFFERED comes from .profile.d: the launcher sourced it
		if code != 200 || !strings.Contains(body, `"message": "hi from python-app"`) || !strings.Contains(body, `"unbuffered": "1"`) {
			t.Errorf("GET / = %d %q", code, body)
		}
	})

	t.Run("go", func(t *testing.T) {
		e.createFormation("gopher")
		bare, sha, commit := gitRepo(t, loadApp(t, "go-app"))
		rel, out := mustBuild(t, e, "gopher", bare, sha)
		wantLines(t, out, "-----> Go app detected", "bin/go-app", "Default types for buildpack -> web")
		if rel.Build.Buildpack != "Go" || rel.Build.ProcessTypes["web"] != "bin/go-app" {
			t.Errorf("build = %+v", rel.Build)
		}
		// the compiler cache persists in the formation's build cache
		if !cacheHolds(t, e, "gopher", "cache/go-build/") {
			t.Errorf("no Go build cache kept")
		}
		code, body, _ := get(t, runWeb(t, e, rel)+"/")
		if code != 200 || body != "hello from go-app\n" {
			t.Errorf("GET / = %d %q", code, body)
		}
		// a dependency cannot be downloaded: the build says why
		sha2 := commit(map[string]string{"go.mod": "module example.com/go-app\n\ngo 1.22\n\nrequire example.com/missing v1.0.0\n",
			"main.go": "package main\n\nimport _ \"example.com/missing\"\n\nfunc main() {}\n"})
		var buf bytes.Buffer
		_, err := e.b.Build(ctx, "gopher", bare, sha2, &buf)
		t.Logf("build output:\n%s", buf.String())
		if err == nil || !strings.Contains(err.Error(), "cannot be downloaded here (GOPROXY=off): vendor them") {
			t.Errorf("build with an undownloadable dependency: err = %v", err)
		}
	})

	t.Run("static", func(t *testing.T) {
		e.createFormation("site")
		bare, sha, _ := gitRepo(t, loadApp(t, "static-app"))
		rel, out := mustBuild(t, e, "site", bare, sha)
		wantLines(t, out, "-----> Static app detected", "Default types for buildpack -> web")
		if rel.Build.Buildpack != "Static" || rel.Build.ProcessTypes["web"] != "python3 .deis/static/server.py" {
			t.Errorf("build = %+v", rel.Build)
		}
		base := runWeb(t, e, rel)
		for _, tc := range []struct {
			path string
			code int
			want string
		}{
			{"/", 200, "hello from static-app"},
			{"/about", 200, "about static-app"}, // clean_urls
			{"/nope", 404, "static-app: no such page"},
			{"/.deis/static/server.py", 404, "no such page"}, // dotfiles are never served
		} {
			code, body, _ := get(t, base+tc.path)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("GET %s = %d %q, want %d and %q", tc.path, code, body, tc.code, tc.want)
			}
		}
		if _, _, h := get(t, base+"/style.css"); h.Get("Cache-Control") != "public, max-age=3600" {
			t.Errorf("static.json headers not applied: %v", h)
		}
	})
}

// cacheHolds reports whether formation f's build cache tarball has an
// entry under prefix.
func cacheHolds(t *testing.T, e *env, f, prefix string) bool {
	t.Helper()
	file, err := os.Open(filepath.Join(e.dataDir, "cache", f, cacheFile))
	if err != nil {
		t.Fatalf("build cache of %s: %v", f, err)
	}
	defer file.Close()
	tr := tar.NewReader(file)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return false
		}
		if err != nil {
			t.Fatalf("build cache of %s: %v", f, err)
		}
		if strings.HasPrefix(h.Name, prefix) {
			return true
		}
	}
}

func TestGoWithoutToolchainExplains(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.GoRoot = "" })
	e.createFormation("gopher")
	bare, sha, _ := gitRepo(t, loadApp(t, "go-app"))
	var out bytes.Buffer
	_, err := e.b.Build(context.Background(), "gopher", bare, sha, &out)
	if err == nil || !strings.Contains(err.Error(), "no buildpack supports this app") ||
		!strings.Contains(out.String(), "no Go toolchain") || !strings.Contains(out.String(), "--go-root") {
		t.Fatalf("err = %v\n%s", err, out.String())
	}
}

func TestPipFailureIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.createFormation("py")
	bare, sha, _ := gitRepo(t, with(loadApp(t, "python-app"), map[string]string{"requirements.txt": "requests==2.31.0\n"}))
	var out bytes.Buffer
	_, err := e.b.Build(context.Background(), "py", bare, sha, &out)
	t.Logf("build output:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "pip install failed: no network?") {
		t.Fatalf("err = %v, want the pip failure", err)
	}
	wantLines(t, out.String(), "-----> Installing requirements with pip", "-----> pip install failed: no network?", "PIP_INDEX_URL")
	if _, err := e.store.LatestRelease(context.Background(), "py"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a failed build released: %v", err)
	}
}

// makeCustomBuildpacks makes two buildpacks in git work trees, alpha and
// beta, both served over git's dumb HTTP protocol on the Docker bridge (so
// that the build container clones them); alpha is also used by path.
func makeCustomBuildpacks(t *testing.T) (alphaDir, alphaURL, betaURL string) {
	t.Helper()
	alpha := map[string]string{
		"bin/detect": "#!/bin/bash\necho Alpha\n",
		"bin/compile": "#!/bin/bash\nset -e\necho \"-----> alpha compiling\"\nmkdir -p \"$1/.profile.d\"\n" +
			"echo \"alpha:$(cat \"$3/GREETING\" 2>/dev/null)\" >\"$1/alpha.txt\"\n" +
			"echo 'export ALPHA=from-profile' >\"$1/.profile.d/alpha.sh\"\n",
		"export":      "export ALPHA_EXPORT=exported\n",
		"bin/release": "#!/bin/bash\necho ---\necho default_process_types:\necho '  web: cat alpha.txt'\n",
	}
	beta := map[string]string{
		"bin/detect":  "#!/bin/bash\necho Beta\n",
		"bin/compile": "#!/bin/bash\nset -e\necho \"beta:${ALPHA_EXPORT:-none}:$(cat \"$3/GREETING\" 2>/dev/null)\" >\"$1/beta.txt\"\n",
		"bin/release": "#!/bin/bash\necho ---\necho default_process_types:\necho '  web: cat beta.txt'\necho '  worker: sleep 1'\n",
	}
	alphaBare, _, _ := gitRepo(t, alpha)
	alphaDir = filepath.Join(filepath.Dir(alphaBare), "work")
	betaBare, _, _ := gitRepo(t, beta)
	gitIn(t, betaBare, "tag", "v1", "main")
	return alphaDir, serveGit(t, alphaBare), serveGit(t, betaBare) + "#v1"
}

// serveGit serves a bare repository over git's dumb HTTP protocol on the
// Docker bridge and returns its URL.
func serveGit(t *testing.T, bare string) string {
	t.Helper()
	gitIn(t, bare, "update-server-info")
	l, err := net.Listen("tcp", dockerBridgeIP(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(filepath.Dir(bare)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("http://%s/%s", l.Addr(), filepath.Base(bare))
}

func gitIn(t *testing.T, gitDir string, args ...string) {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", gitDir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// dockerBridgeIP is the host's address on Docker's default bridge, which
// build containers reach.
func dockerBridgeIP(t *testing.T) string {
	t.Helper()
	iface, err := net.InterfaceByName("docker0")
	if err == nil {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	t.Fatalf("no docker0 bridge address to serve a buildpack to build containers on: %v", err)
	return ""
}

func TestBuildpackURL(t *testing.T) {
	t.Parallel()
	alphaDir, _, betaURL := makeCustomBuildpacks(t)
	// the operator allows the directory that holds alpha
	e := newEnv(t, func(c *Config) { c.BuildpackDirs = []string{filepath.Dir(alphaDir)} })
	ctx := context.Background()
	e.createFormation("custom")
	setConfig := func(vars map[string]string) {
		t.Helper()
		if err := e.store.Put(ctx, e.store.Keys.Config("custom"), state.Config{Vars: vars}); err != nil {
			t.Fatal(err)
		}
	}
	// an app no bundled buildpack would build
	bare, sha, commit := gitRepo(t, map[string]string{"README": "built by a custom buildpack\n"})

	// a git URL with #ref, cloned inside the build container
	setConfig(map[string]string{"BUILDPACK_URL": betaURL, "GREETING": "hey"})
	rel, out := mustBuild(t, e, "custom", bare, sha)
	wantLines(t, out, "-----> Using the buildpacks given, as BUILDPACK_URL is set: "+betaURL,
		"-----> Fetching buildpack "+betaURL, "-----> Beta app detected", "Default types for buildpack -> web, worker")
	if rel.Build.Buildpack != "Beta" || rel.Build.ProcessTypes["web"] != "cat beta.txt" {
		t.Errorf("build = %+v", rel.Build)
	}
	// ENV_DIR holds the config
	if got, _ := slugFile(t, e, rel, "beta.txt"); got != "beta:none:hey\n" {
		t.Errorf("beta.txt = %q", got)
	}

	// an absolute path on the coordinator under an allowed directory,
	// mounted read-only
	setConfig(map[string]string{"BUILDPACK_URL": alphaDir, "GREETING": "yo"})
	sha = commit(map[string]string{"README": "again\n"})
	rel, out = mustBuild(t, e, "custom", bare, sha)
	wantLines(t, out, "-----> Alpha app detected", "-----> alpha compiling")
	if got, _ := slugFile(t, e, rel, "alpha.txt"); got != "alpha:yo\n" || rel.Build.ProcessTypes["web"] != "cat alpha.txt" {
		t.Errorf("alpha.txt = %q, build %+v", got, rel.Build)
	}

	for _, tc := range []struct{ url, want string }{
		// a bundled buildpack by name, which must detect the app
		{"go", "the buildpack go does not support this app (its bin/detect failed)"},
		// nothing git or the coordinator can use
		{"ftp://example.test/bp", "config var BUILDPACK_URL: \"ftp://example.test/bp\" is neither a git URL"},
		// a path outside the directories the operator allowed
		{"/no/such/dir", "BUILDPACK_URL /no/such/dir is a local path: an operator must allow its directory with deis-coordinator --buildpack-dir"},
		{"/etc", "BUILDPACK_URL /etc is a local path: an operator must allow its directory with deis-coordinator --buildpack-dir"},
		{filepath.Join(filepath.Dir(alphaDir), "none"), "does not exist on the coordinator"},
		{filepath.Dir(alphaDir), "is not a buildpack: it has no executable bin/compile"},
		// an unreachable git URL
		{"http://" + dockerBridgeIP(t) + ":1/none.git", "could not clone the buildpack"},
	} {
		setConfig(map[string]string{"BUILDPACK_URL": tc.url})
		var buf bytes.Buffer
		_, err := e.b.Build(ctx, "custom", bare, sha, &buf)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("BUILDPACK_URL=%s: err = %v, want %q\n%s", tc.url, err, tc.want, buf.String())
		}
	}
	if latest, _ := e.store.LatestRelease(ctx, "custom"); latest.Version != 2 {
		t.Errorf("failed builds released: latest is v%d", latest.Version)
	}
}

// .buildpacks runs several buildpacks in order; each sees what the ones
// before it exported, and the last one's process types win.
func TestMultipleBuildpacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	_, alphaURL, betaURL := makeCustomBuildpacks(t)
	e.createFormation("multi")
	e.store.Put(ctx, e.store.Keys.Config("multi"), state.Config{Vars: map[string]string{"GREETING": "hi"}})
	bare, sha, commit := gitRepo(t, with(loadApp(t, "python-app"), map[string]string{
		".buildpacks": "# run in order\n" + alphaURL + "\npython\n\n" + betaURL + "\n",
	}))
	rel, out := mustBuild(t, e, "multi", bare, sha)
	wantLines(t, out, "-----> Using the buildpacks given, as the app's .buildpacks lists them",
		"-----> Alpha app detected", "-----> Python app detected", "-----> Beta app detected")
	if rel.Build.Buildpack != "Alpha, Python, Beta" {
		t.Errorf("buildpack = %q", rel.Build.Buildpack)
	}
	if got, _ := slugFile(t, e, rel, "beta.txt"); got != "beta:exported:hi\n" {
		t.Errorf("beta.txt = %q: beta did not see alpha's export", got)
	}
	for _, f := range []string{"alpha.txt", ".profile.d/alpha.sh", ".profile.d/python.sh"} {
		if _, ok := slugFile(t, e, rel, f); !ok {
			t.Errorf("slug lacks %s", f)
		}
	}
	if rel.Build.ProcessTypes["web"] != "cat beta.txt" || rel.Build.ProcessTypes["worker"] != "sleep 1" {
		t.Errorf("types = %v, want the last buildpack's", rel.Build.ProcessTypes)
	}

	// a buildpack whose detect fails is skipped
	sha = commit(map[string]string{".buildpacks": "go\n" + alphaURL + "\n"})
	rel, out = mustBuild(t, e, "multi", bare, sha)
	wantLines(t, out, "-----> Skipping go: its bin/detect does not match this app", "-----> Alpha app detected")
	if rel.Build.Buildpack != "Alpha" || rel.Build.ProcessTypes["web"] != "cat alpha.txt" {
		t.Errorf("build = %+v", rel.Build)
	}
}

func TestDockerfileBuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	e.createFormation("dock")
	e.store.Put(ctx, e.store.Keys.Config("dock"), state.Config{Vars: map[string]string{"GREETING": "ahoy"}})
	// server.py marked as this test's own: Docker's cache picks the newest
	// image of a step, so a concurrent build of the same content elsewhere
	// (gc_test, the e2e tests) could otherwise hand the rebuild below an
	// image of the other build's chain
	app := loadApp(t, "dockerfile-app")
	app["server.py"] += "# TestDockerfileBuild\n"
	bare, sha, commit := gitRepo(t, app)

	rel, out := mustBuild(t, e, "dock", bare, sha)
	wantLines(t, out, "-----> Building "+sha[:7]+" of dock from its Dockerfile", "-----> Dockerfile app detected",
		"Step 1/", "FROM deis/stack:bookworm", "Dockerfile CMD -> web: python3 /srv/server.py")
	b := rel.Build
	if b.Slug != nil || !strings.HasPrefix(b.Image, "deis/app-dock:") || len(b.Image) != len("deis/app-dock:")+12 ||
		b.ProcessTypes["web"] != "python3 /srv/server.py" || b.Buildpack != "Dockerfile" {
		t.Fatalf("build = %+v", b)
	}
	info, err := e.docker.InspectImage(ctx, b.Image)
	if err != nil || shortImageID(info.ID) != strings.TrimPrefix(b.Image, "deis/app-dock:") {
		t.Fatalf("image %s: %+v, %v: want it tagged with its own id", b.Image, info, err)
	}
	code, body, _ := get(t, runWeb(t, e, rel)+"/")
	if code != 200 || body != "ahoy from dockerfile-app\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	// the image, saved in the slug store for the nodes that lack it
	wantLines(t, out, "-----> Saving the image for other nodes... done, ")
	if b.ImageArchive == nil {
		t.Fatal("a Dockerfile build has no image archive")
	}
	if tags := archiveTags(t, e, *b.ImageArchive); !slices.Contains(tags, b.Image) {
		t.Errorf("the image archive names %v, want %s", tags, b.Image)
	}

	// the same content makes the same image name
	rel2, _ := mustBuild(t, e, "dock", bare, sha)
	if rel2.Build.Image != b.Image {
		t.Errorf("rebuild made %s, want %s", rel2.Build.Image, b.Image)
	}

	// a Procfile names the process types (and may run a release command
	// in the image)
	sha = commit(map[string]string{"Procfile": "web: python3 /srv/server.py\nrelease: echo released from $GREETING image\n"})
	rel, out = mustBuild(t, e, "dock", bare, sha)
	wantLines(t, out, "Procfile declares types -> release, web", "-----> Running release command...", "       released from ahoy image")
	if rel.Build.Slug != nil || rel.Build.ProcessTypes["release"] == "" {
		t.Errorf("build = %+v", rel.Build)
	}

	// a forced buildpack wins over the Dockerfile
	e.store.Put(ctx, e.store.Keys.Config("dock"), state.Config{Vars: map[string]string{"BUILDPACK_URL": "procfile"}})
	rel, out = mustBuild(t, e, "dock", bare, sha)
	if rel.Build.Slug == nil || rel.Build.Buildpack != "Procfile" || strings.Contains(out, "Dockerfile app detected") {
		t.Errorf("BUILDPACK_URL=procfile built %+v", rel.Build)
	}

	// a base image the engine lacks cannot be pulled: the build says so
	e.store.Put(ctx, e.store.Keys.Config("dock"), state.Config{})
	sha = commit(map[string]string{"Dockerfile": "FROM deis/no-such-image:never\nCMD [\"true\"]\n"})
	var buf bytes.Buffer
	_, err = e.b.Build(ctx, "dock", bare, sha, &buf)
	t.Logf("build output:\n%s", buf.String())
	if err == nil || !strings.Contains(err.Error(), "docker build failed") || !strings.Contains(err.Error(), "FROM must name an image the Docker engine already has") {
		t.Errorf("missing base image: err = %v", err)
	}
	wantFailure(t, e, "dock", 1, "FROM must name an image the Docker engine already has")
}

func TestReleasePhase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	e.createFormation("migr")
	e.store.Put(ctx, e.store.Keys.Config("migr"), state.Config{Vars: map[string]string{"DATABASE_URL": "postgres://db/x"}})
	bare, sha, commit := gitRepo(t, loadApp(t, "release-fail"))

	var out bytes.Buffer
	_, err := e.b.Build(ctx, "migr", bare, sha, &out)
	t.Logf("build output:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "release command failed (exit 3)") {
		t.Fatalf("err = %v, want the release command's failure", err)
	}
	wantLines(t, out.String(), "-----> Running release command...", "       migrating the database of migr", "       error: the database is unreachable")
	if _, err := e.store.LatestRelease(ctx, "migr"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("a failed release command released: %v", err)
	}
	if n := counterValue(t, e.b.m.releasePhases.WithLabelValues("failed")); n != 1 {
		t.Errorf("failed release phases = %v", n)
	}
	wantFailure(t, e, "migr", 1, "release command failed (exit 3)")
	assertNoBuildContainers(t, e, "migr")

	// fixed: it runs like a process of the release (launcher, .profile.d,
	// config, PORT, read-only /app) and the release follows
	sha = commit(map[string]string{
		".profile.d/app.sh": "export FROM_PROFILE=yes\n",
		"migrate.py":        "import os\nprint('migrated', os.environ['DATABASE_URL'], os.environ['PORT'], os.environ['FROM_PROFILE'], os.environ['DEIS_RELEASE'], os.getcwd(), os.access('/app', os.W_OK), flush=True)\n",
	})
	out.Reset()
	rel, err := e.b.Build(ctx, "migr", bare, sha, &out)
	t.Logf("build output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out.String(), "       migrated postgres://db/x 5000 yes v1 /app False", "-----> Release command done", "-----> Launching... done, v1")
	if rel.Build.ProcessTypes["release"] != "python3 migrate.py" || rel.Build.ProcessTypes["web"] == "" {
		t.Errorf("types = %v: the release type stays in the build", rel.Build.ProcessTypes)
	}
	assertNoBuildContainers(t, e, "migr")
}

func TestReleaseOnlyProcfileIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.createFormation("r")
	bare, sha, _ := gitRepo(t, map[string]string{"Procfile": "release: true\n"})
	var out bytes.Buffer
	_, err := e.b.Build(context.Background(), "r", bare, sha, &out)
	if err == nil || !strings.Contains(err.Error(), "declares no process types") {
		t.Fatalf("err = %v", err)
	}
}

func TestChooseBuild(t *testing.T) {
	bundled := t.TempDir()
	for _, d := range []string{"10-python", "99-procfile"} {
		os.MkdirAll(filepath.Join(bundled, d), 0o755)
	}
	allowed := t.TempDir()
	custom := filepath.Join(allowed, "bp")
	os.MkdirAll(filepath.Join(custom, "bin"), 0o755)
	os.WriteFile(filepath.Join(custom, "bin", "compile"), []byte("#!/bin/sh\n"), 0o755)
	elsewhere := t.TempDir()
	os.MkdirAll(filepath.Join(elsewhere, "bin"), 0o755)
	os.WriteFile(filepath.Join(elsewhere, "bin", "compile"), []byte("#!/bin/sh\n"), 0o755)
	// a symlink in the allowed directory to a buildpack outside it
	os.Symlink(elsewhere, filepath.Join(allowed, "escape"))
	notAllowed := "is a local path: an operator must allow its directory with deis-coordinator --buildpack-dir"

	for _, tc := range []struct {
		name       string
		vars       map[string]string
		dotBP      string // "" means no .buildpacks
		dockerfile bool
		allowed    []string
		mode       string
		locs       []string
		err        string
	}{
		// nothing forced: detection, even with a Dockerfile absent
		{name: "detect", mode: modeDetect},
		// a Dockerfile without a forced buildpack
		{name: "dockerfile", dockerfile: true, mode: modeDockerfile},
		// BUILDPACK_URL beats .buildpacks and the Dockerfile
		{name: "url wins", vars: map[string]string{"BUILDPACK_URL": "https://example.test/bp.git#v2"}, dotBP: "python\n", dockerfile: true,
			mode: modeSingle, locs: []string{"https://example.test/bp.git#v2"}},
		// .buildpacks beats the Dockerfile; names and URLs mix
		{name: "multi", dotBP: "# c\nheroku/python\n\ngit@example.test:bp.git\n", dockerfile: true,
			mode: modeMulti, locs: []string{"/buildpacks/10-python", "git@example.test:bp.git"}},
		{name: "empty .buildpacks", dotBP: "# nothing\n", err: ".buildpacks lists no buildpack"},
		{name: "bad line", dotBP: "python\nfile:///x\n", err: ".buildpacks line 2"},
		// .buildpacks never names a path on the coordinator, allowed or not
		{name: "path in .buildpacks", dotBP: "python\n" + custom + "\n", allowed: []string{allowed},
			err: ".buildpacks line 2: " + custom + " is a local path: .buildpacks lists only git URLs and bundled buildpacks (python, procfile)"},
		{name: "relative path in .buildpacks", dotBP: "./bp\n", err: ".buildpacks line 1: ./bp is a local path"},
		{name: "option injection", vars: map[string]string{"BUILDPACK_URL": "--upload-pack=touch /x"}, err: "not a buildpack URL"},
		// a local BUILDPACK_URL only under an allowed directory
		{name: "path not allowed", vars: map[string]string{"BUILDPACK_URL": custom}, err: "BUILDPACK_URL " + custom + " " + notAllowed},
		{name: "path allowed", vars: map[string]string{"BUILDPACK_URL": custom}, allowed: []string{allowed},
			mode: modeSingle, locs: []string{customBuildpacks + "/0"}},
		{name: "symlink out of the allowed dir", vars: map[string]string{"BUILDPACK_URL": filepath.Join(allowed, "escape")}, allowed: []string{allowed},
			err: notAllowed},
		{name: "dot-dot out of the allowed dir", vars: map[string]string{"BUILDPACK_URL": allowed + "/../" + filepath.Base(elsewhere)}, allowed: []string{allowed},
			err: notAllowed},
		{name: "missing under the allowed dir", vars: map[string]string{"BUILDPACK_URL": filepath.Join(allowed, "none")}, allowed: []string{allowed},
			err: "does not exist on the coordinator"},
		{name: "not a buildpack", vars: map[string]string{"BUILDPACK_URL": allowed}, allowed: []string{allowed}, err: "no executable bin/compile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dirs, err := checkBuildpackDirs(tc.allowed)
			if err != nil {
				t.Fatal(err)
			}
			p, err := chooseBuild(tc.vars, []byte(tc.dotBP), tc.dotBP != "", tc.dockerfile, bundled, dirs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var locs []string
			for _, bp := range p.buildpacks {
				locs = append(locs, bp.Loc)
			}
			if p.mode != tc.mode || strings.Join(locs, " ") != strings.Join(tc.locs, " ") {
				t.Fatalf("plan = %s %v, want %s %v", p.mode, locs, tc.mode, tc.locs)
			}
		})
	}
}

func TestImageCommand(t *testing.T) {
	for _, tc := range []struct {
		entrypoint, cmd []string
		want            string
	}{
		{nil, []string{"python3", "/srv/server.py"}, "python3 /srv/server.py"},
		{nil, []string{"/bin/sh", "-c", "python3 server.py --port $PORT"}, "python3 server.py --port $PORT"},
		{[]string{"/entry"}, []string{"run", "it's"}, `/entry run 'it'\''s'`},
		{nil, nil, ""},
	} {
		if got := imageCommand(tc.entrypoint, tc.cmd); got != tc.want {
			t.Errorf("imageCommand(%q, %q) = %q, want %q", tc.entrypoint, tc.cmd, got, tc.want)
		}
	}
}

// archiveTags checks that the slug store holds the image archive ref (a
// gzipped `docker save`) and returns the image names its manifest gives.
func archiveTags(t *testing.T, e *env, ref state.SlugRef) []string {
	t.Helper()
	p, err := e.slugs.Path(ref.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("image archive: %v", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != ref.Size {
		t.Fatalf("image archive size: %v, %v; want %d", st, err, ref.Size)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("image archive: %v", err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("image archive has no manifest.json: %v", err)
		}
		if hdr.Name != "manifest.json" {
			continue
		}
		var manifest []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
			t.Fatalf("manifest.json: %v", err)
		}
		var tags []string
		for _, m := range manifest {
			tags = append(tags, m.RepoTags...)
		}
		return tags
	}
}
