// Package launcher holds the shell scripts that start an app's process in
// its container. The agent runs every process with them, and the builder's
// release phase runs the release command with them, so that it runs exactly
// as the release's processes will. Both take the command in the
// DEIS_COMMAND environment variable, so that no quoting is involved.
package launcher
