// Command deis-coordinator runs the platform's control plane: the scheduler
// (only on the elected leader), the SSH git endpoint that builds slugs, and
// the slug file server. Without --etcd-endpoints it starts an embedded etcd
// in its data directory and serves it on loopback.
//
// `deis-coordinator hook` is the pre-receive hook the git server installs in
// every repository; it hands the push to the builder and streams its output.
package main
