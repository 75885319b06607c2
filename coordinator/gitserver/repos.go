package gitserver

import "path/filepath"

// ReposDir is where a server with data directory dataDir keeps the bare
// repositories, one per formation, named NAME.git. The coordinator's purge
// removes the repository of a destroyed formation from there.
func ReposDir(dataDir string) string { return filepath.Join(dataDir, "repos") }
