// Package state is the platform's state model in etcd: the key layout, the
// value types stored under each key family, and the revision-guarded
// transactions that change them.
//
// Every component talks to every other through these keys; there is no other
// API. docs/architecture.md lists each key family with its writer and its
// readers. The rules this package enforces:
//
//   - Values are JSON, one document per key.
//   - Every read-modify-write is a transaction guarded by the ModRevision read,
//     so two concurrent writers never lose an update (see Store.Update).
//   - Releases are an append-only numbered log; AppendRelease creates release
//     N+1 only if no key for N+1 exists yet, so two writers never create two
//     releases with one number.
//   - Heartbeats live under their own family, away from every key an agent or a
//     proxy watches, so lease refreshes never wake a watcher.
//   - Every key sits under a prefix (default "/deis") so installations can
//     share one etcd cluster.
//
// Errors: lookups return ErrNotFound (test with errors.Is); guarded writes
// that keep losing races return ErrConflict; validation helpers return errors
// that say what a valid value looks like.
package state
