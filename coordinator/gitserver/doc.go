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
// A session is for one incarnation of its formation (the CreateRevision of
// its key, state.Store.Incarnation), read before and after the permission
// check; a session whose formation was destroyed or created in between is
// refused ("formation F was destroyed or created again while your session
// started: try again"). Before git runs, Config.Claimer (builder.Claim)
// makes the formation's directories belong to that incarnation: a
// repository, build logs and cache left by an older incarnation of the name
// are removed, under the formation's build lock, and an empty repository
// takes the repository's place, so a clone right after formations:destroy
// and formations:create never shows the old owner's history (not even
// before the coordinator's purge pass). While a build of the old incarnation
// still holds the lock, the session waits for it up to a minute, then is
// refused with "formation F was destroyed and created again, and a build of
// the old one is still running: its files are removed when it ends; try
// again in a few minutes". The hook gets the incarnation as
// DEIS_INCARNATION and passes it to the builder (builder.Request), so a push
// that was under way when its formation was destroyed and created again
// releases nothing into the new one: "formation F was destroyed and created
// again meanwhile: nothing released into the new formation".
//
// Repositories are bare, at DataDir/repos/NAME.git, created on first use.
// Before every session the pre-receive hook is rewritten to exec
// Config.HookCommand, which in the coordinator is `deis-coordinator hook`:
// RunHook. Only main and master are accepted: the hook refuses a push of
// any other ref (branches, tags) and the deletion of main or master, before
// it builds anything, with "pushed branch B: only main or master deploys:
// git push deis B:main". It asks the builder (over its unix socket) to build
// the pushed commit and streams the build to the pusher; if the build fails
// the hook fails and git rejects the push, so the branch never points at a
// commit that did not build. git keeps a push's objects in a quarantine
// until the refs are updated, so a refused push leaves nothing behind.
//
// Limits (limits.go), all in Config with defaults: a connection that has not
// authenticated within AuthTimeout (10s) is closed; connections over
// MaxConns (100) in total or MaxConnsPerIP (10) from one source address are
// closed at once, before the SSH version exchange. A push may send at most
// MaxPushBytes (512MiB): the copy from the SSH channel into git
// receive-pack stops before the first byte over, the pusher reads "push is
// larger than the 512.0MB limit (--max-push-bytes)", and git, at the early
// end of its input, discards the quarantine (receive.maxInputSize holds the
// same limit inside git). A git session lasts at most SessionTimeout; when a
// session ends early, git and its hook get SIGTERM in their own process
// group. Refusals are counted in deis_coordinator_ssh_connections_closed_total
// and deis_coordinator_git_pushes_refused_total.
//
// The SSH host key is kept at DataDir/ssh_host_ed25519_key, generated on
// first start.
package gitserver
