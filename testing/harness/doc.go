// Package harness runs the real platform for end-to-end tests: it builds the
// three binaries from the tree, starts a coordinator (with its embedded etcd)
// and any number of agents as separate processes on this machine, each with
// its own loopback address, state directory and ports, and drives them with
// the real deisctl binary and the real git client over SSH.
// PlatformOptions.Addr and AgentOptions.Addr put everything on another
// address instead, such as the host's own, which containers can route to
// (the hostile suite uses it to show that only the platform's rules keep
// containers away from the platform's ports).
//
// Everything a harness starts is stopped and removed when the test ends:
// processes, the proxies' nginx masters and the containers the agents made.
package harness
