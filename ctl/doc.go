// Package ctl is deisctl, the command-line client of the platform. Its
// commands read or write the state model of pkg/state in etcd, and the
// coordinator and the agents converge on what they wrote. Two commands also
// reach HTTPS endpoints that they find through etcd, presenting deisctl's
// client certificate (its credentials directory): logs reads each node's
// agent API (state.Node.APIURL; only the certificate of that node is
// accepted, access.IdentityTLS) and the coordinator's build-log endpoint
// (under state.CoordinatorInfo.SlugURL), and run starts a one-off container
// through the agent API of a live node of the formation's runtime layers.
//
// NewApp returns the whole CLI as a urfave/cli App. Commands use Heroku-style
// colon names at the top level (formations:create, config:set, releases,
// rollback, scale, ps, status, logs, run, domains:add, limits:set,
// layers:create, keys:add, users:create, perms:grant, nodes:list,
// nodes:drain, ...); docs/cli.md lists them all. The etcd client and
// the state.Store are built in the App's Before from the shared etcd flags
// (pkg/etcdconn), only for commands that need them, and closed in its After;
// all output goes to App.Writer, so a test runs the CLI in-process:
//
//	app := ctl.NewApp()
//	app.Writer, app.ErrWriter = &out, &errOut
//	err := app.Run([]string{"deisctl", "--etcd-endpoints", url, "formations:create", "hello"})
//
// Commands that act on one formation take -f/--formation; without it they use
// the formation named by the current directory's "deis" git remote. Flags may
// also follow positional arguments (deisctl config:set A=1 -f hello).
//
// Operators act on nodes only through etcd too: nodes:drain writes a
// state.Drain the scheduler reads, and status says when a formation's layers
// match no live node.
//
// Users and permissions decide who may git push: an SSH key belongs to a
// user (keys:add --user, which must exist unless it is state.BootstrapAdmin),
// and a user may push to a formation when it is an admin or holds a
// permission on it (perms:grant). users:destroy refuses to remove the last
// admin and removes the user's keys and permissions with its record.
// Users are etcd users too (issue 10): users:create --ca writes a user's
// credentials (a client certificate of the platform CA named for its etcd
// user), and the coordinator's access loop turns the records into etcd
// roles, so etcd itself refuses a user what it was not granted; deisctl
// reports that refusal in one line (explainDenied: "alice may not change
// shop: ask an administrator for deisctl perms:grant alice -f shop"). A user
// who is not an administrator lists only its granted formations, and scale,
// run and logs make do with the reads it is allowed.
//
// Every write is one etcd transaction: config changes and rollbacks write the
// config key and append the release together (state.Store.AppendRelease),
// guarded by the revisions they read, so concurrent commands never lose an
// update or create two releases with one number. (users:destroy of a user
// with more keys and permissions than etcd allows in one transaction deletes
// them in chunks first, its record last.) A command that fails validation
// writes nothing.
//
// Errors are returned to the caller (main prints them as "deisctl: ...") and
// say what to do next; lookups that find nothing wrap state.ErrNotFound.
package ctl
