// Package ctl is deisctl, the command-line client of the platform. It talks
// to nothing but etcd: every command reads or writes the state model of
// pkg/state, and the coordinator and the agents converge on what it wrote.
//
// NewApp returns the whole CLI as a urfave/cli App. Commands use Heroku-style
// colon names at the top level (formations:create, config:set, releases,
// rollback, scale, ps, status, domains:add, limits:set, layers:create,
// keys:add, nodes:list, nodes:drain, ...); docs/cli.md lists them all. The etcd client and
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
// Every write is one etcd transaction: config changes and rollbacks write the
// config key and append the release together (state.Store.AppendRelease),
// guarded by the revisions they read, so concurrent commands never lose an
// update or create two releases with one number. A command that fails
// validation writes nothing.
//
// Errors are returned to the caller (main prints them as "deisctl: ...") and
// say what to do next; lookups that find nothing wrap state.ErrNotFound.
package ctl
