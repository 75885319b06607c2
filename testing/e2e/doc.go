// Package e2e holds the end-to-end tests: the real binaries, real etcd,
// real Docker, real Nginx and the real git client over SSH, driven the way a
// user drives them. Run them with `make test`.
//
// TestHostile (hostile_test.go) plays an attacker with push rights to some
// formations and runs the attacks of docs/security.md through the whole
// platform; each must fail while another formation keeps serving.
package e2e
