// Package bench holds the platform's benchmarks; their figures live in
// docs/benchmarks.md with the commands that produced them.
//
//   - TestScale (`make bench-scale`) runs the real scheduler controller
//     and a real etcd, each in its own process (this test binary run again
//     with DEIS_BENCH_ROLE set, see RunRole), against Sim: simulated runtime
//     agents and proxies that register, keep lease-bound heartbeats, report
//     every container of their runtime databags ready at once and
//     acknowledge every routing revision, all through the real key layout
//     and pkg/state types. It measures cold start, one config:set, a node
//     lost, the controller's CPU with nothing changing (from /proc), its
//     etcd reads per pass (a counting client) and its memory. Without
//     DEIS_BENCH_SCALE it runs one tiny size in a few seconds.
//   - TestAgentRSS (also `make bench-scale`) measures the real deis-agent's
//     memory with 50 real containers of testing/apps/scratch-app on Docker.
//   - BenchmarkPlan measures one scheduler.Plan over a synthetic world (no
//     etcd); BenchmarkAppendRelease the release log's guarded append
//     against a real etcd.
package bench
