package builder

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"
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

// Build modes: how the builder turns a commit into something to run.
const (
	modeDetect     = "detect"     // the first bundled buildpack whose bin/detect matches
	modeSingle     = "single"     // BUILDPACK_URL names the one buildpack to run
	modeMulti      = "multi"      // .buildpacks lists the buildpacks to run, in order
	modeDockerfile = "dockerfile" // a Dockerfile build, no buildpack
)

// buildpackRef is one buildpack to run as build.sh reads it: a directory in
// the build container, or a git URL that build.sh clones.
type buildpackRef struct {
	Label string // as the user wrote it
	Loc   string // container directory or git URL (with an optional #ref)
	Bind  string // host directory mounted read-only at Loc, if any
}

// customBuildpacks is where buildpacks given as coordinator paths are
// mounted in the build container.
const customBuildpacks = "/buildpacks-custom"

// buildPlan is what the builder decided to run for one commit.
type buildPlan struct {
	mode       string
	buildpacks []buildpackRef // for modeSingle and modeMulti
	reason     string         // what chose the mode, for the build output
}

// chooseBuild decides how to build: BUILDPACK_URL in the config wins, then
// a .buildpacks file, then a Dockerfile, then detection over the bundled
// buildpacks. bundledDir is where the bundled buildpacks are on the host
// (also mounted at /buildpacks); allowedDirs are the directories under which
// BUILDPACK_URL may name a local buildpack (Config.BuildpackDirs, real
// paths).
func chooseBuild(vars map[string]string, dotBuildpacks []byte, hasDotBuildpacks, hasDockerfile bool, bundledDir string, allowedDirs []string) (buildPlan, error) {
	if url := strings.TrimSpace(vars["BUILDPACK_URL"]); url != "" {
		ref, err := resolveBuildpack(url, 0, bundledDir, allowedDirs, true)
		if err != nil {
			if strings.HasPrefix(err.Error(), "BUILDPACK_URL ") {
				return buildPlan{}, fmt.Errorf("builder: %w", err)
			}
			return buildPlan{}, fmt.Errorf("builder: config var BUILDPACK_URL: %w", err)
		}
		return buildPlan{mode: modeSingle, buildpacks: []buildpackRef{ref}, reason: "BUILDPACK_URL is set"}, nil
	}
	if hasDotBuildpacks {
		var refs []buildpackRef
		for n, line := range strings.Split(string(dotBuildpacks), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			ref, err := resolveBuildpack(line, len(refs), bundledDir, nil, false)
			if err != nil {
				return buildPlan{}, fmt.Errorf("builder: .buildpacks line %d: %w: fix it, commit and push again", n+1, err)
			}
			refs = append(refs, ref)
		}
		if len(refs) == 0 {
			return buildPlan{}, errors.New("builder: .buildpacks lists no buildpack: put one git URL or bundled buildpack name per line, or remove the file")
		}
		return buildPlan{mode: modeMulti, buildpacks: refs, reason: "the app's .buildpacks lists them"}, nil
	}
	if hasDockerfile {
		return buildPlan{mode: modeDockerfile, reason: "the app has a Dockerfile"}, nil
	}
	return buildPlan{mode: modeDetect}, nil
}

// resolveBuildpack turns what a user wrote (BUILDPACK_URL, fromConfig, or
// a .buildpacks line) into a buildpack build.sh can run. It accepts the
// name of a bundled buildpack ("python"), a git URL (https, http, git,
// ssh, or user@host:path), optionally followed by #ref, and, for
// BUILDPACK_URL only, an absolute path on the coordinator under one of
// allowedDirs (a directory with bin/compile, mounted read-only). A pusher
// can write .buildpacks, so it never names a path on the coordinator.
func resolveBuildpack(spec string, i int, bundledDir string, allowedDirs []string, fromConfig bool) (buildpackRef, error) {
	if strings.ContainsAny(spec, " \t\r\n\x00") || strings.HasPrefix(spec, "-") {
		return buildpackRef{}, fmt.Errorf("%q is not a buildpack URL: it contains spaces or starts with '-'", spec)
	}
	// A bundled buildpack by name: "python", or "heroku/python" as on Heroku.
	name := strings.TrimPrefix(spec, "heroku/")
	if dir := bundledByName(bundledDir, name); dir != "" {
		return buildpackRef{Label: spec, Loc: "/buildpacks/" + dir}, nil
	}
	if isGitURL(spec) {
		return buildpackRef{Label: spec, Loc: spec}, nil
	}
	if isLocalPath(spec) {
		if !fromConfig {
			return buildpackRef{}, fmt.Errorf("%s is a local path: .buildpacks lists only git URLs and bundled buildpacks (%s)",
				spec, strings.Join(bundledNames(bundledDir), ", "))
		}
		return localBuildpack(spec, i, allowedDirs)
	}
	return buildpackRef{}, fmt.Errorf("%q is neither a git URL (https://, git://, ssh://, user@host:path) nor a bundled buildpack (%s)",
		spec, strings.Join(bundledNames(bundledDir), ", "))
}

// isLocalPath reports whether spec looks like a path on the coordinator.
func isLocalPath(spec string) bool {
	return filepath.IsAbs(spec) || spec == "." || spec == ".." || strings.HasPrefix(spec, "./") ||
		strings.HasPrefix(spec, "../") || strings.HasPrefix(spec, "~") || strings.HasPrefix(spec, "file:")
}

// localBuildpack accepts BUILDPACK_URL naming a directory on the
// coordinator only when its real path (symlinks resolved) is under one of
// allowedDirs; it is then mounted read-only.
func localBuildpack(spec string, i int, allowedDirs []string) (buildpackRef, error) {
	notAllowed := fmt.Errorf("BUILDPACK_URL %s is a local path: an operator must allow its directory with deis-coordinator --buildpack-dir", spec)
	if strings.HasPrefix(spec, "file:") {
		return buildpackRef{}, notAllowed
	}
	if !filepath.IsAbs(spec) {
		return buildpackRef{}, fmt.Errorf("BUILDPACK_URL %s is a relative path: give a git URL, a bundled buildpack, or an absolute path under a directory allowed with deis-coordinator --buildpack-dir", spec)
	}
	real, err := filepath.EvalSymlinks(spec)
	if err != nil {
		if underAny(filepath.Clean(spec), allowedDirs) {
			return buildpackRef{}, fmt.Errorf("buildpack directory %s does not exist on the coordinator", spec)
		}
		return buildpackRef{}, notAllowed
	}
	if !underAny(real, allowedDirs) {
		return buildpackRef{}, notAllowed
	}
	if strings.ContainsAny(real, ":,") {
		return buildpackRef{}, fmt.Errorf("buildpack directory %s: paths with ':' or ',' cannot be mounted", spec)
	}
	st, err := os.Stat(filepath.Join(real, "bin", "compile"))
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return buildpackRef{}, fmt.Errorf("%s is not a buildpack: it has no executable bin/compile", spec)
	}
	loc := fmt.Sprintf("%s/%d", customBuildpacks, i)
	return buildpackRef{Label: spec, Loc: loc, Bind: real + ":" + loc + ":ro"}, nil
}

// underAny reports whether path is one of dirs or inside one of them.
func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// checkBuildpackDirs checks Config.BuildpackDirs and returns their real
// paths.
func checkBuildpackDirs(dirs []string) ([]string, error) {
	var out []string
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("builder: --buildpack-dir %q must be an absolute path", d)
		}
		real, err := filepath.EvalSymlinks(d)
		if err != nil {
			return nil, fmt.Errorf("builder: --buildpack-dir %s: %w", d, err)
		}
		if st, err := os.Stat(real); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("builder: --buildpack-dir %s is not a directory", d)
		}
		out = append(out, real)
	}
	return out, nil
}

// isGitURL accepts the remote forms git clones from over the network.
func isGitURL(s string) bool {
	u, _, _ := strings.Cut(s, "#")
	for _, scheme := range []string{"https://", "http://", "git://", "ssh://"} {
		if rest, ok := strings.CutPrefix(u, scheme); ok {
			return len(rest) > 0 && !strings.HasPrefix(rest, "/")
		}
	}
	// scp-like: user@host:path
	at, colon := strings.IndexByte(u, '@'), strings.IndexByte(u, ':')
	return at > 0 && colon > at+1 && colon < len(u)-1 && !strings.Contains(u[:colon], "/")
}

// bundledNames lists the bundled buildpacks' names ("python"), in order.
func bundledNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		if _, name, ok := strings.Cut(e.Name(), "-"); ok && e.IsDir() {
			names = append(names, name)
		}
	}
	return names
}

// bundledByName returns the directory name ("10-python") of the bundled
// buildpack called name, or "".
func bundledByName(dir, name string) string {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, n, ok := strings.Cut(e.Name(), "-"); ok && e.IsDir() && n == name {
			return e.Name()
		}
	}
	return ""
}

// writeInstructions writes /in for build.sh: the mode and the buildpacks.
func (p buildPlan) writeInstructions(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var list strings.Builder
	for _, bp := range p.buildpacks {
		fmt.Fprintf(&list, "%s\t%s\n", bp.Label, bp.Loc)
	}
	if err := os.WriteFile(filepath.Join(dir, "mode"), []byte(p.mode+"\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "buildpacks"), []byte(list.String()), 0o644)
}

// labels lists the buildpacks as the user wrote them.
func (p buildPlan) labels() []string {
	out := make([]string, len(p.buildpacks))
	for i, bp := range p.buildpacks {
		out[i] = bp.Label
	}
	return out
}

// FindGoRoot returns the Go installation of this host, for Config.GoRoot:
// `go env GOROOT` if a go command is on PATH, else the GOROOT this binary
// was built with; "" when neither holds a Go toolchain.
func FindGoRoot(ctx context.Context) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, "go", "env", "GOROOT").Output(); err == nil {
		if root := strings.TrimSpace(string(out)); root != "" {
			if _, err := checkGoRoot(root); err == nil {
				return root
			}
		}
	}
	if root := runtime.GOROOT(); root != "" { //nolint:staticcheck // the build-time GOROOT is a fine fallback
		if _, err := checkGoRoot(root); err == nil {
			return root
		}
	}
	return ""
}

// checkGoRoot makes sure dir holds a Go toolchain and returns its real path.
func checkGoRoot(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("builder: Go root %q must be an absolute path", dir)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err == nil {
		var st os.FileInfo
		if st, err = os.Stat(filepath.Join(real, "bin", "go")); err == nil && st.Mode()&0o111 == 0 {
			err = errors.New("bin/go is not executable")
		}
	}
	if err != nil {
		return "", fmt.Errorf("builder: %s is not a Go installation (%v): point --go-root at a GOROOT, or set it to \"\" to build no Go apps", dir, err)
	}
	if strings.ContainsAny(real, ":,") {
		return "", fmt.Errorf("builder: Go root %s: paths with ':' or ',' cannot be mounted", real)
	}
	return real, nil
}
