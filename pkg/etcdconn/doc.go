// Package etcdconn holds the etcd connection settings every binary shares:
// endpoints, TLS files, user and password, and the key prefix, each as a flag
// and as a DEIS_ environment variable. Dial returns a connected client or an
// error that names the endpoints it tried.
package etcdconn
