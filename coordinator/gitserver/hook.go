package gitserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/deis/deis/coordinator/builder"
	"github.com/deis/deis/pkg/state"
)

// deployBranches are the branches whose pushes are built and released.
var deployBranches = map[string]bool{"refs/heads/main": true, "refs/heads/master": true}

// RunHook is the pre-receive hook (`deis-coordinator hook --socket S`). It
// reads git's "old new ref" lines from stdin; for a push to main or master
// it asks the builder listening on socket to build the new commit and copies
// the build output to stdout (which git shows the pusher as "remote:"
// lines). Other branches and deletions are accepted without a build. An
// error rejects the whole push; the reason has then already been printed.
//
// The repository is the hook's GIT_DIR (or its working directory, where git
// runs hooks of a bare repository); its name minus ".git" is the formation.
func RunHook(ctx context.Context, socket string, stdin io.Reader, stdout io.Writer) error {
	gitDir := os.Getenv("GIT_DIR")
	if gitDir == "" {
		gitDir = "."
	}
	return runHook(ctx, socket, gitDir, os.Getenv("GIT_QUARANTINE_PATH"), stdin, stdout)
}

func runHook(ctx context.Context, socket, gitDir, quarantine string, stdin io.Reader, stdout io.Writer) error {
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
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		newSHA, ref := f[1], f[2]
		switch {
		case strings.Trim(newSHA, "0") == "":
			fmt.Fprintf(stdout, "-----> %s deleted; nothing to build\n", ref)
			continue
		case !deployBranches[ref]:
			fmt.Fprintf(stdout, "-----> Not building %s: only pushes to main or master are deployed\n", ref)
			continue
		}
		_, err := builder.RequestBuild(ctx, socket, builder.Request{
			Formation: formation, Repo: repo, SHA: newSHA, Quarantine: quarantine,
		}, stdout)
		if err != nil {
			fmt.Fprintf(stdout, " !     %v\n", err)
			return fmt.Errorf("push rejected: the build of %s failed", formation)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("gitserver: hook: read refs: %w", err)
	}
	return nil
}
