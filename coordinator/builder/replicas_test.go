package builder

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

// fakeReplicas stands in for slugstore.Replicator (tested on its own with
// real etcd and HTTP): it records the calls and answers await with err.
type fakeReplicas struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeReplicas) Hold(_ context.Context, ref state.SlugRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "hold "+ref.SHA256)
	return nil
}

func (f *fakeReplicas) AwaitCopies(_ context.Context, sha string, timeout time.Duration, say func(string)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "await "+sha)
	if f.err == nil {
		say("-----> Stored on 2 coordinators")
	}
	return f.err
}

// A build records its slug as held once stored, and releases only when a
// second copy is there; when none can be made the push fails and nothing
// is released.
func TestBuildWaitsForSecondCopy(t *testing.T) {
	t.Parallel()
	rep := &fakeReplicas{err: errors.New("slugstore: the slug 0123 is stored on this coordinator only")}
	e := newEnv(t, func(c *Config) { c.Replicas = rep; c.ReplicaTimeout = time.Second })
	e.createFormation("twice")
	bare, sha, commit := gitRepo(t, helloApp)

	var out bytes.Buffer
	_, err := e.b.Build(context.Background(), "twice", bare, sha, &out)
	if err == nil || !strings.Contains(err.Error(), "stored on this coordinator only") {
		t.Fatalf("Build without a second copy: %v\n%s", err, out.String())
	}
	if _, err := e.store.LatestRelease(context.Background(), "twice"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("a release was written without a second copy: %v", err)
	}
	if len(rep.calls) != 2 || !strings.HasPrefix(rep.calls[0], "hold ") || rep.calls[1] != "await "+strings.TrimPrefix(rep.calls[0], "hold ") {
		t.Fatalf("calls %v, want hold then await of the same slug", rep.calls)
	}

	rep.err, rep.calls = nil, nil
	rel, out2 := mustBuild(t, e, "twice", bare, commit(map[string]string{"server.py": "print('again')\n"}))
	if rel.Version != 1 || !strings.Contains(out2, "Stored on 2 coordinators") {
		t.Fatalf("release v%d, output:\n%s", rel.Version, out2)
	}
	if want := []string{"hold " + rel.Build.Slug.SHA256, "await " + rel.Build.Slug.SHA256}; strings.Join(rep.calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %v, want %v", rep.calls, want)
	}
}
