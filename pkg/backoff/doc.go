// Package backoff is the one retry delay helper: exponential, capped, with
// jitter, and waits that end when their context does.
package backoff
