// Package poll waits in tests for a condition to hold, with a deadline and a
// short backoff, and fails the test with what it was waiting for. It is the
// one polling helper of the test suites; nothing waits for a fixed time.
package poll
