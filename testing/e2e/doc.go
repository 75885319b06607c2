// Package e2e holds the end-to-end tests: the real binaries, real etcd,
// real Docker, real Nginx and the real git client over SSH, driven the way a
// user drives them. Run them with `make test`.
package e2e
