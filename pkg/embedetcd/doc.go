// Package embedetcd runs a single-member etcd inside the process, on
// loopback, in a data directory. The coordinator uses it when it is given no
// etcd endpoints; tests use it (through etcdtest) as their real etcd.
package embedetcd
