package gitserver

import (
	"path/filepath"

	"github.com/deis/deis/coordinator/builder"
)

// ReposDir is where a server with data directory dataDir keeps the bare
// repositories, one per formation, named NAME.git. The coordinator's purge
// removes the repository of a destroyed formation from there.
func ReposDir(dataDir string) string { return filepath.Join(dataDir, "repos") }

// ReposFormationDir describes ReposDir to the builder's purge and claim
// (builder.FormationDir).
func ReposFormationDir(dataDir string) builder.FormationDir {
	return builder.FormationDir{Root: ReposDir(dataDir), Suffix: ".git", Kind: "repository"}
}
