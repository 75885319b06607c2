// Package etcdtest starts a real, in-process etcd for tests, on free
// loopback ports in a temporary directory, and hands back a client.
package etcdtest
