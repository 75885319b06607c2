// Package e2e holds the end-to-end tests: the real binaries, real etcd,
// real Docker, real Nginx and the real git client over SSH, driven the way a
// user drives them. Run them with `make test`.
//
// TestHostile (hostile_test.go) plays an attacker with push rights to some
// formations and runs the attacks of docs/security.md through the whole
// platform; each must fail while another formation keeps serving.
//
// TestHTTPS (https_test.go) adds a certificate, redirects, and has the
// coordinator obtain one from a real ACME server, pebble, which it builds
// once from the Go module proxy into the user's cache directory
// (deis-test/pebble-VERSION) and whose HTTP-01 validation reaches the
// proxy through a DNS server (pebble-challtestsrv) that answers 127.0.0.1.
package e2e
