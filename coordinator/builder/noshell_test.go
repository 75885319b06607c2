package builder

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
)

// staticApp builds testing/apps/scratch-app with the host's Go toolchain as
// a static binary and returns its bytes.
func staticApp(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "app")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join("..", "..", "testing", "apps", "scratch-app")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the scratch app: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An image without /bin/sh (FROM scratch with a static binary) builds and
// records that it has no shell; a Procfile command that needs a shell is
// refused with the reason, and one of plain words is taken.
func TestDockerfileWithoutShell(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.createFormation("bare")
	files := loadApp(t, "scratch-app")
	files["app"] = staticApp(t)
	bare, sha, commit := gitRepo(t, files)

	rel, out := mustBuild(t, e, "bare", bare, sha)
	wantLines(t, out, "The image has no /bin/sh: its processes run directly, without a shell", "Dockerfile CMD -> web: /app")
	if b := rel.Build; !b.NoShell || !b.ImageCommand || b.ProcessTypes["web"] != "/app" {
		t.Fatalf("build = %+v: want NoShell, ImageCommand and web /app", b)
	}
	if m := state.ExecMode(rel.Build, "web"); m != state.ExecImage {
		t.Errorf("web runs %q, want the image's own CMD", m)
	}

	// shell syntax in the Procfile cannot run: refused, nothing released
	sha = commit(map[string]string{"Procfile": "web: /app && echo done\n"})
	var buf bytes.Buffer
	_, err := e.b.Build(context.Background(), "bare", bare, sha, &buf)
	t.Logf("build output:\n%s", buf.String())
	want := "the image has no /bin/sh, so the Procfile's web command cannot use shell syntax (&&): use the exec form"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	wantFailure(t, e, "bare", 1, want)
	sha = commit(map[string]string{"Procfile": "web: /app --port $PORT\n"})
	if _, err := e.b.Build(context.Background(), "bare", bare, sha, &buf); err == nil || !strings.Contains(err.Error(), "($VAR expansion)") {
		t.Errorf("$PORT in a shell-less image: err = %v", err)
	}

	// plain words run directly
	sha = commit(map[string]string{"Procfile": "web: exec /app -greeting hi\n"})
	rel, _ = mustBuild(t, e, "bare", bare, sha)
	if b := rel.Build; !b.NoShell || b.ImageCommand || state.ExecMode(b, "web") != state.ExecDirect {
		t.Errorf("build = %+v: want NoShell and the Procfile's command run directly", b)
	}
}

// An image with a shell, reached through symlinks (/bin -> usr/bin, sh ->
// dash on Debian), is found to have one.
func TestDockerfileWithShell(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.createFormation("shelly")
	bare, sha, _ := gitRepo(t, map[string]string{
		"Dockerfile": "FROM " + e.b.cfg.StackImage + "\nCMD [\"python3\", \"-m\", \"http.server\"]\n",
		"Procfile":   "web: cd /tmp && python3 -m http.server $PORT\n",
	})
	rel, out := mustBuild(t, e, "shelly", bare, sha)
	if rel.Build.NoShell || rel.Build.ImageCommand || strings.Contains(out, "no /bin/sh") {
		t.Errorf("build = %+v: the stack image has /bin/sh", rel.Build)
	}
	if m := state.ExecMode(rel.Build, "web"); m != "" {
		t.Errorf("web runs %q, want through the shell", m)
	}
}
