package ctl

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

// builds lists failed builds with their reason; builds:info shows a build
// with its log, read from the coordinator with deisctl's certificate, and
// still shows the build when the log cannot be had.
func TestBuildsStatusAndLog(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	reason := "the Procfile is invalid: line 1: " + strings.Repeat("x", 100) + "\nsecond line"
	c.put(c.store.Keys.Build("hello", "b2"), state.Build{ID: "b2", Formation: "hello", GitSHA: "fedcba9876543210fedc",
		Failed: true, Error: reason, Created: time.Now().UTC()})
	c.put(c.store.Keys.Build("hello", "b3"), state.Build{ID: "b3", Formation: "hello", GitSHA: "aaaabbbbccccddddeeee",
		Failed: true, Error: "docker build failed", Created: time.Now().UTC().Add(time.Second)})

	out := c.ok("builds", "-f", "hello")
	contains(t, out, "STATUS", "succeeded", "failed: docker build failed", "failed: the Procfile is invalid: line 1: xxx")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "b2") && (!strings.HasSuffix(l, "...") || strings.Contains(l, "second line")) {
			t.Errorf("the long reason is not cut to its start: %q", l)
		}
	}
	if b3, b2 := strings.Index(out, "b3"), strings.Index(out, "b2"); b3 < 0 || b3 > b2 {
		t.Errorf("builds are not newest first:\n%s", out)
	}

	// No coordinator yet: the build, and why there is no log.
	out, errOut, err := c.run("builds:info", "b2", "-f", "hello")
	if err != nil {
		t.Fatalf("builds:info without a coordinator: %v", err)
	}
	contains(t, out, "=== hello Build b2", "failed", "second line")
	contains(t, errOut, "the log of build b2 cannot be shown", "no coordinator has registered")

	// The coordinator's build log endpoint (coordinator/cmd): TLS, deisctl's
	// certificate.
	coord := c.tlsServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/builds/hello/b1.log":
			io.WriteString(w, "-----> Building 0123456 of hello\n-----> Launching... done, v1\n")
		case "/builds/hello/b2.log":
			io.WriteString(w, "-----> Building fedcba9 of hello\nbuild failed: the Procfile is invalid\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer coord.Close()
	c.put(c.store.Keys.Coordinator(), state.CoordinatorInfo{SlugURL: coord.URL})

	out = c.ok("builds:info", "b1", "-f", "hello")
	contains(t, out, "Status:", "succeeded", "feedbeef", "=== hello Build b1 Log", "-----> Launching... done, v1")
	out = c.ok("builds:info", "b2", "-f", "hello")
	contains(t, out, "Status:", "failed", "Error:", "line 1: xxx", "=== hello Build b2 Log", "build failed: the Procfile is invalid")
	contains(t, c.ok("builds:info", "b3", "-f", "hello"), "docker build failed", "the coordinator keeps no log of this build")

	// The coordinator is away: the build is still shown.
	coord.Close()
	out, errOut, err = c.run("builds:info", "b1", "-f", "hello")
	if err != nil {
		t.Fatalf("builds:info with the coordinator away: %v", err)
	}
	contains(t, out, "=== hello Build b1", "feedbeef")
	contains(t, errOut, "the log of build b1 cannot be shown")
	if strings.Contains(out, "Log") {
		t.Errorf("a log section without a log:\n%s", out)
	}
}

// Rolling back to a release older than the newest ten warns that its slug
// may be gone, and rolls back all the same.
func TestRollbackWarnsAboutOldReleases(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	for i := 1; i <= 10; i++ { // v2..v11
		c.ok("config:set", fmt.Sprintf("N=%d", i), "-f", "hello")
	}
	out, errOut, err := c.run("rollback", "v2", "-f", "hello")
	if err != nil || !strings.Contains(out, "done, v12") || errOut != "" {
		t.Fatalf("rollback v2 (one of the newest ten): %v, %q, %q", err, out, errOut)
	}
	out, errOut, err = c.run("rollback", "v1", "-f", "hello")
	if err != nil || !strings.Contains(out, "Rolling back hello to v1... done, v13") {
		t.Fatalf("rollback v1: %v, %q", err, out)
	}
	contains(t, errOut, "warning: v1 is older than the newest 10 releases of hello", "its slug may have been collected", "--keep-releases")
	if r := c.release("hello", 13); r.Build == nil || r.Build.ID != "b1" {
		t.Errorf("v13 = %+v", r)
	}
}

func TestBuildStatus(t *testing.T) {
	for _, tc := range []struct {
		b    state.Build
		max  int
		want string
	}{
		// a successful build
		{state.Build{ID: "b1"}, 10, "succeeded"},
		// a failure, shown in full when it is short
		{state.Build{Failed: true, Error: "release command failed (exit 3)"}, 80, "failed: release command failed (exit 3)"},
		// only the first line, marked as cut
		{state.Build{Failed: true, Error: "first\nsecond"}, 80, "failed: first..."},
		// cut to max bytes, never inside a character
		{state.Build{Failed: true, Error: "abcdé"}, 5, "failed: abcd..."},
		// no limit
		{state.Build{Failed: true, Error: "abcdef"}, 0, "failed: abcdef"},
		// a failure without a reason
		{state.Build{Failed: true}, 80, "failed: no reason given"},
	} {
		if got := buildStatus(tc.b, tc.max); got != tc.want {
			t.Errorf("buildStatus(%+v, %d) = %q, want %q", tc.b, tc.max, got, tc.want)
		}
	}
}

func TestRollbackMayLackArtifacts(t *testing.T) {
	for _, tc := range []struct {
		target, current int
		want            bool
	}{
		{1, 10, false}, // v1..v10 are the newest ten
		{1, 11, true},  // v2..v11 are
		{5, 6, false},
		{2, 12, true},
	} {
		if got := rollbackMayLackArtifacts(tc.target, tc.current); got != tc.want {
			t.Errorf("rollbackMayLackArtifacts(%d, %d) = %v, want %v", tc.target, tc.current, got, tc.want)
		}
	}
}
