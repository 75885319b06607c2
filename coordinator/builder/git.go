package builder

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/procfile"
	"github.com/deis/deis/pkg/state"
)

// repo runs git against one bare repository. During a pre-receive hook the
// pushed objects still sit in a quarantine directory inside the repository;
// git only shows them to processes that name it as an alternate object
// directory.
type repo struct {
	git        string
	dir        string
	quarantine string
}

func validSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// openRepo checks the repository directory and the quarantine directory,
// which must lie inside the repository's objects directory.
func openRepo(dir, quarantine string) (repo, error) {
	if !filepath.IsAbs(dir) {
		return repo{}, fmt.Errorf("builder: repository path %q is not absolute", dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return repo{}, fmt.Errorf("builder: no repository at %s", dir)
	}
	r := repo{git: "git", dir: filepath.Clean(dir)}
	if quarantine != "" {
		q := filepath.Clean(quarantine)
		rel, err := filepath.Rel(filepath.Join(r.dir, "objects"), q)
		if !filepath.IsAbs(q) || err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			return repo{}, fmt.Errorf("builder: quarantine directory %q is not inside %s/objects", quarantine, r.dir)
		}
		r.quarantine = q
	}
	return r, nil
}

func (r repo) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, r.git, append([]string{"--git-dir", r.dir}, args...)...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	if r.quarantine != "" {
		env = append(env, "GIT_ALTERNATE_OBJECT_DIRECTORIES="+r.quarantine)
	}
	c.Env = env
	return c
}

func (r repo) output(ctx context.Context, args ...string) ([]byte, error) {
	c := r.cmd(ctx, args...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// checkCommit makes sure sha names a commit of the repository.
func (r repo) checkCommit(ctx context.Context, sha string) error {
	if _, err := r.output(ctx, "cat-file", "-e", sha+"^{commit}"); err != nil {
		return fmt.Errorf("builder: commit %s is not in %s: %w", sha, r.dir, err)
	}
	return nil
}

// readFile reads the file at path (relative to the root) of commit sha, up
// to max bytes. found is false when the commit has no such file; a path
// that is not a regular file is an error that names it.
func (r repo) readFile(ctx context.Context, sha, path string, max int64) (data []byte, found bool, err error) {
	out, err := r.output(ctx, "ls-tree", "-z", "-l", sha, "--", path)
	if err != nil {
		return nil, false, fmt.Errorf("builder: %w", err)
	}
	entry := strings.TrimRight(string(out), "\x00")
	if entry == "" {
		return nil, false, nil
	}
	// "<mode> <type> <object> <size>\t<path>"
	meta, _, _ := strings.Cut(entry, "\t")
	fields := strings.Fields(meta)
	if len(fields) != 4 || fields[1] != "blob" || fields[0] == "120000" {
		return nil, true, fmt.Errorf("builder: %s is not a regular file: make it one, commit and push again", path)
	}
	if size, err := strconv.ParseInt(fields[3], 10, 64); err == nil && size > max {
		return nil, true, fmt.Errorf("builder: %s is larger than %s: shorten it, commit and push again", path, state.HumanBytes(max))
	}
	blob, err := r.output(ctx, "cat-file", "blob", fields[2])
	if err != nil {
		return nil, true, fmt.Errorf("builder: read %s: %w", path, err)
	}
	return blob, true, nil
}

// hasFile reports whether commit sha has an entry (of any kind) at path.
func (r repo) hasFile(ctx context.Context, sha, path string) (bool, error) {
	out, err := r.output(ctx, "ls-tree", "-z", sha, "--", path)
	if err != nil {
		return false, fmt.Errorf("builder: %w", err)
	}
	return strings.TrimRight(string(out), "\x00") != "", nil
}

// procfile reads and parses the Procfile at the root of commit sha. found is
// false when the commit has none.
func (r repo) procfile(ctx context.Context, sha string) (types map[string]string, found bool, err error) {
	blob, found, err := r.readFile(ctx, sha, "Procfile", 1<<20)
	if err != nil || !found {
		return nil, found, err
	}
	types, err = procfile.Parse(bytes.NewReader(blob))
	if err != nil {
		return nil, true, fmt.Errorf("builder: invalid Procfile: %w: fix it, commit and push again", err)
	}
	return types, true, nil
}

// archive streams commit sha as a tar whose entries start with prefix.
func (r repo) archive(ctx context.Context, sha, prefix string, consume func(io.Reader) error) error {
	c := r.cmd(ctx, "archive", "--format=tar", "--prefix="+prefix, sha)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	pipe, err := c.StdoutPipe()
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return fmt.Errorf("git archive: %w", err)
	}
	cerr := consume(pipe)
	io.Copy(io.Discard, pipe) // let git finish if the consumer stopped early
	werr := c.Wait()
	if werr != nil {
		return fmt.Errorf("git archive: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return cerr
}
