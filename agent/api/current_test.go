package api_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deis/deis/agent/api"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
)

// TestCurrentRelease: one-off runs use the view's current release: the
// newest not marked failed, and a formation destroyed and created again
// inherits no failure of the old one's releases (even a status key left
// behind).
func TestCurrentRelease(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, "/t")
	k := s.Keys
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	put := func(key string, v any) {
		t.Helper()
		if err := s.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateFormation(ctx, &state.Formation{Name: "hello"}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.CurrentRelease(ctx, s, "hello"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("no release: err = %v", err)
	}
	put(k.Release("hello", 1), state.Release{Formation: "hello", Version: 1})
	put(k.Release("hello", 2), state.Release{Formation: "hello", Version: 2})
	put(k.ReleaseStatus("hello", 2), state.ReleaseStatus{Version: 2, Failed: true})
	if rel, err := api.CurrentRelease(ctx, s, "hello"); err != nil || rel.Version != 1 {
		t.Fatalf("current = %+v, %v; want v1 (v2 failed)", rel, err)
	}
	put(k.ReleaseStatus("hello", 1), state.ReleaseStatus{Version: 1, Failed: true})
	if _, err := api.CurrentRelease(ctx, s, "hello"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("all failed: err = %v", err)
	}

	if err := s.DestroyFormation(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	// A failure recorded after the destroy, before any purge.
	put(k.ReleaseStatus("hello", 1), state.ReleaseStatus{Version: 1, Failed: true})
	if err := s.CreateFormation(ctx, &state.Formation{Name: "hello"}); err != nil {
		t.Fatal(err)
	}
	put(k.Release("hello", 1), state.Release{Formation: "hello", Version: 1, Description: "new"})
	rel, err := api.CurrentRelease(ctx, s, "hello")
	if err != nil || rel.Version != 1 || rel.Description != "new" {
		t.Fatalf("after re-creation: current = %+v, %v; want the new v1", rel, err)
	}
}
