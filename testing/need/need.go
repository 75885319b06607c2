package need

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// StackImage is the image the stack script builds.
const StackImage = "deis/stack:bookworm"

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required when CI is set", what)
	}
	t.Skipf("%s not available (set CI=1 to make this a failure)", what)
}

// Binary requires an executable on PATH and returns its path.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name)
	}
	return p
}

// Docker requires a reachable Docker engine.
func Docker(t testing.TB) {
	t.Helper()
	Binary(t, "docker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").Run(); err != nil {
		missing(t, "a running Docker engine")
	}
}

// Stack requires Docker and the stack image.
func Stack(t testing.TB) {
	t.Helper()
	Docker(t)
	if err := exec.Command("docker", "image", "inspect", StackImage).Run(); err != nil {
		missing(t, "the stack image "+StackImage+" (make stack)")
	}
}

// Nginx requires the nginx binary and returns its path.
func Nginx(t testing.TB) string { t.Helper(); return Binary(t, "nginx") }

// Git requires the git client and returns its path.
func Git(t testing.TB) string { t.Helper(); return Binary(t, "git") }
