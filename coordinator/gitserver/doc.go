// Package gitserver is the coordinator's SSH git endpoint: `git push` of a
// formation's repository builds and releases it.
//
// Authentication is by public key only: the key's SHA256 fingerprint must be
// registered under /deis/keys (deisctl keys:add). An unknown key is refused
// during authentication, with a banner that says how to register it.
//
// Authorization: the key's user (SSHKey.User) must be an admin
// (state.User.Admin) or hold a permission on the formation
// (state.Perm at Keys.Perm(formation, user), deisctl perms:grant); otherwise
// the session is refused with "user U may not push to formation F: ask an
// admin to run deisctl perms:grant U -f F", before the server says whether
// the formation exists. For backward compatibility, keys of user "admin"
// (deisctl keys:add's default) count as an admin's while no user record
// named "admin" exists (state.BootstrapAdmin). Fetching needs the same
// permission as pushing.
//
// A session may run exactly one of two commands, as the git client sends
// them: `git-receive-pack 'NAME.git'` (push) and `git-upload-pack 'NAME.git'`
// (fetch, clone). The leading slash, the quotes and the .git suffix are
// optional. NAME must be a valid formation name and the formation must
// exist. Anything else, including a shell, is refused with a message on
// stderr and exit status 1; there are no PTYs, subsystems or forwarding.
//
// Repositories are bare, at DataDir/repos/NAME.git, created on first use.
// Before every session the pre-receive hook is rewritten to exec
// Config.HookCommand, which in the coordinator is `deis-coordinator hook`:
// RunHook. The hook asks the builder (over its unix socket) to build the
// pushed commit of main or master and streams the build to the pusher;
// if the build fails the hook fails and git rejects the push, so the
// branch never points at a commit that did not build.
//
// The SSH host key is kept at DataDir/ssh_host_ed25519_key, generated on
// first start.
package gitserver
