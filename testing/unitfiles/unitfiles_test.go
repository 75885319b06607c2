package unitfiles

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deis/deis/testing/harness"
	"github.com/deis/deis/testing/need"
)

func TestSystemdUnitsVerify(t *testing.T) {
	analyze := need.Binary(t, "systemd-analyze")
	bin := harness.Binaries(t)
	root := filepath.Join("..", "..", "systemd")
	units := map[string]string{
		"deis-coordinator.service":    "deis-coordinator.service",
		"deis-agent.service":          "deis-agent.service",
		"etcd-member.service.example": "etcd-member.service",
	}
	dir := t.TempDir()
	for src, dst := range units {
		b, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.NewReplacer(
			"/usr/local/bin/deis-coordinator", filepath.Join(bin, "deis-coordinator"),
			"/usr/local/bin/deis-agent", filepath.Join(bin, "deis-agent"),
			"/usr/bin/etcd", "/bin/true",
		).Replace(string(b))
		for _, want := range []string{"Restart=always", "EnvironmentFile="} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %s", src, want)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, dst), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", filepath.Join(dir, dst)).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", src, err, out)
		}
	}
	// Containers and nginx must outlive an agent restart.
	b, _ := os.ReadFile(filepath.Join(root, "deis-agent.service"))
	if !strings.Contains(string(b), "KillMode=process") {
		t.Error("deis-agent.service must use KillMode=process so app containers and nginx outlive the agent")
	}
}
