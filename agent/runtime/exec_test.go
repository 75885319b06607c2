package runtime

import (
	"slices"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
)

// How an image's process starts, by the spec's Exec mode; the confinement
// is the same in every case.
func TestContainerConfigExec(t *testing.T) {
	base := spec("hello.v3.web.1", 3)
	base.Slug, base.Image = nil, "deis/app-hello:abc"
	for _, c := range []struct {
		name       string
		exec, cmd  string
		entrypoint []string
		argv       []string
		launcher   bool // DEIS_COMMAND set for the launcher
	}{
		// An image with a shell runs a Procfile command through it.
		{"shell", "", "./server && true", []string{"/bin/sh", "-c"}, nil, true},
		// No Procfile: the image's own ENTRYPOINT and CMD, no wrapper.
		{"image", state.ExecImage, "/app", nil, nil, false},
		// No /bin/sh: the words, directly.
		{"direct", state.ExecDirect, "exec /app -addr :5000", []string{"/app"}, []string{"-addr", ":5000"}, false},
		// No /bin/sh and one word: no arguments, not the image's CMD.
		{"direct one word", state.ExecDirect, "/app", []string{"/app"}, []string{}, false},
	} {
		s := base
		s.Exec, s.Command = c.exec, c.cmd
		cfg, hc := containerConfig(testProfile, s, "")
		if len(cfg.Entrypoint) < len(c.entrypoint) || !slices.Equal([]string(cfg.Entrypoint)[:len(c.entrypoint)], c.entrypoint) {
			t.Errorf("%s: entrypoint %q, want %q", c.name, cfg.Entrypoint, c.entrypoint)
		}
		if c.exec == state.ExecDirect && (!slices.Equal([]string(cfg.Cmd), c.argv) || cfg.Cmd == nil) {
			t.Errorf("%s: cmd %q, want %q", c.name, cfg.Cmd, c.argv)
		}
		if c.exec == state.ExecImage && (cfg.Entrypoint != nil || cfg.Cmd != nil) {
			t.Errorf("%s: the image's own ENTRYPOINT and CMD should run: %q %q", c.name, cfg.Entrypoint, cfg.Cmd)
		}
		hasLauncher := slices.ContainsFunc(cfg.Env, func(e string) bool { return strings.HasPrefix(e, "DEIS_COMMAND=") })
		if hasLauncher != c.launcher {
			t.Errorf("%s: DEIS_COMMAND set = %v, want %v", c.name, hasLauncher, c.launcher)
		}
		if !hc.ReadonlyRootfs || !slices.Equal(hc.CapDrop, []string{"ALL"}) || !slices.Contains(hc.SecurityOpt, "no-new-privileges") || hc.Tmpfs["/tmp"] == "" {
			t.Errorf("%s: not confined: %+v", c.name, hc)
		}
	}
}
