// Command deisctl manages a deis platform: formations, config, releases,
// scale, domains, limits, layers, nodes and SSH keys, all through etcd. See
// package ctl and docs/cli.md.
package main
