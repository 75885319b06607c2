package builder

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// bundled holds the buildpacks that ship with the coordinator, one directory
// per buildpack named NN-name so that they are tried in a fixed order.
//
//go:embed buildpacks
var bundled embed.FS

// buildScript runs inside the build container.
//
//go:embed build.sh
var buildScript string

// extractBuildpacks writes the bundled buildpacks to dir, replacing what an
// older coordinator left there. Files under a bin/ directory are executable.
func extractBuildpacks(dir string) error {
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	err := fs.WalkDir(bundled, "buildpacks", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(tmp, filepath.FromSlash(strings.TrimPrefix(p, "buildpacks")))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := bundled.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if path.Base(path.Dir(p)) == "bin" {
			mode = 0o755
		}
		if err := os.WriteFile(target, data, mode); err != nil {
			return err
		}
		return os.Chmod(target, mode) // whatever the umask
	})
	if err != nil {
		return fmt.Errorf("builder: extract buildpacks: %w", err)
	}
	old := dir + ".old"
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("builder: replace buildpacks: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("builder: install buildpacks: %w", err)
	}
	return os.RemoveAll(old)
}
