// Package runtimetest fakes the Docker engine the runtime role drives: an
// in-memory runtimetest.Docker implements the whole runtime.Docker
// interface, with real TCP listeners on published ports so readiness probes
// pass. Use it for fast tests of the reconcile loop; the end-to-end tests
// use the real engine.
package runtimetest
