package gitserver

import (
	"testing"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// The coordinator's purge finds repositories where the server keeps them.
func TestReposDirIsWhereTheServerKeepsRepositories(t *testing.T) {
	need.Git(t)
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, Store: &state.Store{}, HookCommand: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.repos != ReposDir(dir) {
		t.Fatalf("server keeps repositories in %s, ReposDir says %s", s.repos, ReposDir(dir))
	}
}
