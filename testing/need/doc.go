// Package need lets a test ask for a real dependency (Docker, Nginx, git,
// the stack image). When one is missing the test is skipped on a laptop but
// fails when the CI environment variable is set: a green CI run must have
// tested something.
package need
