package gitserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/deis/deis/coordinator/builder"
	"github.com/deis/deis/pkg/state"
)

// deployBranches are the branches whose pushes are built and released.
var deployBranches = map[string]bool{"refs/heads/main": true, "refs/heads/master": true}

// RunHook is the pre-receive hook (`deis-coordinator hook --socket S`). It
// reads git's "old new ref" lines from stdin. Only main and master are
// accepted: a push of another branch, of a tag or of any other ref, and the
// deletion of main or master, is refused with the reason, and nothing of
// the push is kept (git discards its quarantine). Deleting another branch
// (one left from before this rule) is allowed. For each pushed main or
// master, it asks the builder listening on socket to build the new commit
// and copies the build output to stdout (which git shows the pusher as
// "remote:" lines); the builder answers once the release is live (or has
// failed: its health checks, the boot timeout), unless the wait is off. An
// error rejects the whole push, so the branch is not updated and keeps
// naming what runs; the reason has then already been printed.
//
// The repository is the hook's GIT_DIR (or its working directory, where git
// runs hooks of a bare repository); its name minus ".git" is the formation.
// DEIS_INCARNATION, set by the server, is the incarnation of the formation
// the push was accepted for; the build releases only into it (a formation
// destroyed and created again meanwhile gets nothing: "formation F was
// destroyed and created again meanwhile: nothing released into the new
// formation").
func RunHook(ctx context.Context, socket string, stdin io.Reader, stdout io.Writer) error {
	gitDir := os.Getenv("GIT_DIR")
	if gitDir == "" {
		gitDir = "."
	}
	var inc int64
	if v := os.Getenv(incarnationEnv); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			fmt.Fprintf(stdout, " !     invalid %s %q: push through the platform's git server\n", incarnationEnv, v)
			return fmt.Errorf("push rejected: invalid %s %q", incarnationEnv, v)
		}
		inc = n
	}
	return runHook(ctx, socket, gitDir, os.Getenv("GIT_QUARANTINE_PATH"), inc, stdin, stdout)
}

// incarnationEnv carries the session's incarnation of the formation from
// the server to the hook.
const incarnationEnv = "DEIS_INCARNATION"

func runHook(ctx context.Context, socket, gitDir, quarantine string, inc int64, stdin io.Reader, stdout io.Writer) error {
	repo, err := filepath.Abs(gitDir)
	if err != nil {
		return fmt.Errorf("gitserver: hook: %w", err)
	}
	if quarantine != "" {
		if quarantine, err = filepath.Abs(quarantine); err != nil {
			return fmt.Errorf("gitserver: hook: %w", err)
		}
	}
	formation := strings.TrimSuffix(filepath.Base(repo), ".git")
	if err := state.ValidateName("formation", formation); err != nil {
		fmt.Fprintf(stdout, " !     %v\n", err)
		return fmt.Errorf("push rejected: %w", err)
	}
	type update struct{ newSHA, ref string }
	var builds []update
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		newSHA, ref := f[1], f[2]
		deleted := strings.Trim(newSHA, "0") == ""
		if err := checkRef(ref, deleted); err != nil {
			fmt.Fprintf(stdout, " !     %v\n", err)
			return fmt.Errorf("push rejected: %w", err)
		}
		if deleted {
			fmt.Fprintf(stdout, "-----> %s deleted; nothing to build\n", ref)
			continue
		}
		builds = append(builds, update{newSHA, ref})
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("gitserver: hook: read refs: %w", err)
	}
	for _, u := range builds {
		_, err := builder.RequestBuild(ctx, socket, builder.Request{
			Formation: formation, Repo: repo, SHA: u.newSHA, Quarantine: quarantine, Incarnation: inc,
		}, stdout)
		if err != nil {
			fmt.Fprintf(stdout, " !     %v\n", err)
			return fmt.Errorf("push rejected: %s was not deployed (the build or its rollout failed)", formation)
		}
	}
	return nil
}

// checkRef refuses every update but a push to main or master and the
// deletion of a branch other than those.
func checkRef(ref string, deleted bool) error {
	branch, isBranch := strings.CutPrefix(ref, "refs/heads/")
	switch {
	case deployBranches[ref] && deleted:
		return fmt.Errorf("deleting branch %s is refused: it is what the formation deploys (deisctl formations:destroy removes a formation)", branch)
	case deployBranches[ref]:
		return nil
	case isBranch && deleted:
		return nil
	case isBranch:
		return fmt.Errorf("pushed branch %s: only main or master deploys: git push deis %s:main", branch, branch)
	}
	if tag, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return fmt.Errorf("pushed tag %s: only main or master deploys, and tags are not kept: push the tagged commit to main (git push deis %s^{commit}:main)", tag, tag)
	}
	return fmt.Errorf("pushed ref %s: only main or master deploys: git push deis HEAD:main", ref)
}
