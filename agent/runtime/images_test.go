package runtime_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/deis/deis/testing/pkitest"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/agent/runtime/runtimetest"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// archiveServer serves one image archive at /slugs/<sha256>.tgz over TLS to
// clients with a certificate of its CA (as the slug server does), and
// counts the downloads.
type archiveServer struct {
	*httptest.Server
	ref       state.SlugRef
	downloads atomic.Int32
}

func newArchiveServer(t *testing.T, archive []byte, ca *pkitest.CA) *archiveServer {
	sum := sha256.Sum256(archive)
	s := &archiveServer{ref: state.SlugRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(archive))}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slugs/"+s.ref.SHA256+".tgz" {
			http.NotFound(w, r)
			return
		}
		s.downloads.Add(1)
		w.Write(archive)
	}))
	s.Server.TLS = ca.ServerTLS("deis:coordinator")
	s.Server.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *archiveServer) url() string { return s.URL + "/slugs/" + s.ref.SHA256 + ".tgz" }

// fakeArchive is a gzipped `docker save` tar as far as the fake engine
// cares: a manifest.json naming tag.
func fakeArchive(t *testing.T, tag string) []byte {
	t.Helper()
	manifest := fmt.Sprintf(`[{"Config":"c.json","RepoTags":[%q],"Layers":[]}]`, tag)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(manifest)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, manifest)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A spec whose image the engine lacks names the image's archive: it is
// downloaded once (with the node's certificate, verified) for both containers, loaded,
// and the containers start. A corrupt archive is reported and not loaded.
func TestImageArchiveIsLoadedFake(t *testing.T) {
	d := runtimetest.New()
	d.Images = map[string]bool{}
	defer d.Close()
	e := newEnv(t, d)
	ca := pkitest.New(t)
	e.cfg.SlugTLS = ca.ClientTLS("deis:node-" + e.node)
	const tag = "deis/app-arch:0123456789ab"
	srv := newArchiveServer(t, fakeArchive(t, tag), ca)
	spec := func(i int) state.ContainerSpec {
		s := imageSpec(fmt.Sprintf("arch.v1.web.%d", i), 1)
		s.Index, s.Image, s.ImageArchive, s.ImageArchiveURL = i, tag, &srv.ref, srv.url()
		return s
	}
	e.assign(spec(1), spec(2))
	e.start()
	e.waitStatus("both containers of the loaded image ready", func(st state.NodeStatus) bool {
		return readyIn("arch.v1.web.1")(st) && readyIn("arch.v1.web.2")(st)
	})
	if n := srv.downloads.Load(); n != 1 {
		t.Errorf("archive downloaded %d times for two containers, want 1", n)
	}
	if n := d.CallCount("ImageLoad"); n != 1 {
		t.Errorf("ImageLoad called %d times, want 1", n)
	}
	if left, _ := filepath.Glob(filepath.Join(e.cfg.StateDir, "slugs", "*")); len(left) != 0 {
		t.Errorf("files left after the load: %v", left)
	}

	// An archive that does not match its sha256 is refused.
	bad := spec(1)
	bad.Name, bad.Release, bad.Image = "arch.v2.web.1", 2, "deis/app-arch:ba0ba0ba0ba0"
	bad.ImageArchive = &state.SlugRef{SHA256: strings.Repeat("ab", 32)}
	bad.ImageArchiveURL = srv.URL + "/slugs/" + srv.ref.SHA256 + ".tgz"
	e.assign(bad)
	e.waitStatus("the corrupt archive in the status", func(st state.NodeStatus) bool {
		c, _ := find(st, "arch.v2.web.1")
		return c.State == state.StateStarting && strings.Contains(c.Reason, "image archive abababababab") && strings.Contains(c.Reason, "has sha256")
	})
	if n := d.CallCount("ImageLoad"); n != 1 {
		t.Errorf("a corrupt archive was loaded (ImageLoad called %d times)", n)
	}
}

// The real engine: an image that exists only as its archive on the slug
// server is loaded and its container runs.
func TestImageArchiveDocker(t *testing.T) {
	need.Stack(t)
	image := buildImage(t, map[string]string{
		"Dockerfile": "FROM " + need.StackImage + "\n" +
			"COPY server.py /srv/server.py\n" +
			"WORKDIR /srv\n" +
			`CMD ["python3", "server.py"]` + "\n",
		"server.py": serverPy,
	})
	// docker save, gzipped as the builder stores it; then the engine
	// forgets the image.
	saved := filepath.Join(t.TempDir(), "image.tar")
	dockerCLI(t, "save", "-o", saved, image)
	raw, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&archive, gzip.BestSpeed)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	dockerCLI(t, "rmi", image)
	if err := exec.Command("docker", "image", "inspect", image).Run(); err == nil {
		t.Fatalf("image %s still there after docker rmi", image)
	}
	ca := pkitest.New(t)
	srv := newArchiveServer(t, archive.Bytes(), ca)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, docker)
	e.cfg.SlugTLS = ca.ClientTLS("deis:node-" + e.node)
	t.Cleanup(func() { // after the runtime stopped; buildImage removes the image after this
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	e.assign(state.ContainerSpec{
		Name: "arch.v1.web.1", Formation: "arch", Release: 1, Type: "web", Index: 1,
		Image: image, HealthPath: "/", Port: 5000,
		Env:          map[string]string{"PORT": "5000", "GREETING": "loaded"},
		ImageArchive: &srv.ref, ImageArchiveURL: srv.url(),
	})
	e.start()
	st := e.waitStatus("the container of the loaded image ready", readyIn("arch.v1.web.1"))
	c, _ := find(st, "arch.v1.web.1")
	resp, err := http.Get("http://" + c.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "loaded dyno=web.1 ") {
		t.Errorf("the container answered %q", body)
	}
	if n := srv.downloads.Load(); n != 1 {
		t.Errorf("archive downloaded %d times, want 1", n)
	}
	if got := dockerCLI(t, "image", "inspect", "-f", "{{index .RepoTags 0}}", image); got != image {
		t.Errorf("the engine has %q, want %s", got, image)
	}
}
