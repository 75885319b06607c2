// Package bench holds the platform's benchmarks: a scale simulator for the
// scheduler's plan (a synthetic world of nodes, formations and containers,
// no etcd) and the state store's guarded writes against a real etcd. The
// figures live in docs/benchmarks.md with the commands that produced them.
package bench
