package gitserver

import (
	"context"
	"testing"

	"github.com/deis/deis/coordinator/builder"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// The coordinator's purge finds repositories where the server keeps them.
func TestReposDirIsWhereTheServerKeepsRepositories(t *testing.T) {
	need.Git(t)
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, Store: &state.Store{}, HookCommand: []string{"true"}, Claimer: claimNothing{}})
	if err != nil {
		t.Fatal(err)
	}
	if s.repos != ReposDir(dir) {
		t.Fatalf("server keeps repositories in %s, ReposDir says %s", s.repos, ReposDir(dir))
	}
	if d := ReposFormationDir(dir); d.Root != s.repos || d.Suffix != ".git" {
		t.Fatalf("ReposFormationDir = %+v, the server keeps NAME.git in %s", d, s.repos)
	}
}

// claimNothing stands in for the builder in tests whose formations are
// never destroyed, so no repository is ever left by an older incarnation.
type claimNothing struct{}

func (claimNothing) Claim(context.Context, string, int64, ...builder.FormationDir) error { return nil }
