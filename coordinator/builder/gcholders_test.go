package builder

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// A collected slug takes its holder keys with it; the holder keys of slugs
// that only lost coordinators held go too, unless a release needs the slug
// or a running coordinator holds it.
func TestGCRemovesHolderKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	k := e.store.Keys
	put := func(sha, member string, stored time.Time) {
		t.Helper()
		if err := e.store.Put(ctx, k.SlugHolder(sha, member), state.SlugHolder{Member: member, Size: 1, Stored: stored}); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-24 * time.Hour)
	if err := e.store.Put(ctx, k.CoordinatorMember("live"), state.CoordinatorMember{ID: "live", SlugURL: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}

	// a stray slug here, also held by a running coordinator
	stray, err := e.slugs.Put(bytes.NewReader([]byte("stray slug")))
	if err != nil {
		t.Fatal(err)
	}
	put(stray.SHA256, "me", old)
	put(stray.SHA256, "live", old)
	sha := func(c byte) string { return string(bytes.Repeat([]byte{c}, 64)) }
	put(sha('a'), "lost", old)              // only a lost coordinator held it: forgotten
	put(sha('b'), "lost", old)              // a node still runs it: kept
	put(sha('c'), "live", old)              // a running coordinator holds it: kept
	put(sha('d'), "lost", time.Now().UTC()) // just stored: kept
	err = e.store.Put(ctx, k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{{
		Name: "x.v1.web.1", Formation: "x", Release: 1, Type: "web", Image: need.StackImage, Slug: &state.SlugRef{SHA256: sha('b')},
	}}})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := e.b.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if e.slugs.Has(stray.SHA256) {
		t.Error("stray slug kept")
	}
	for s, want := range map[string]int{stray.SHA256: 0, sha('a'): 0, sha('b'): 1, sha('c'): 1, sha('d'): 1} {
		h, err := e.store.Holders(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != want {
			t.Errorf("slug %s…: %d holder keys, want %d", s[:4], len(h), want)
		}
	}
}
