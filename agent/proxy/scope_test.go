package proxy

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdauth/authtest"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/deis/deis/testing/poll"
)

// On a secured etcd, a proxy node follows the formations it serves: one
// not granted yet is retried until the access loop's grant, then read and
// watched; another formation's keys stay out of reach.
func TestScopeWaitsForGrantAndFollows(t *testing.T) {
	c := authtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const prefix = "/deis"
	k := state.NewKeys(prefix)
	root := state.NewStore(c.Root, prefix)
	if err := etcdauth.EnsureNode(ctx, c.Root, prefix, "edge", etcdauth.NodeOptions{Proxy: true}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"x", "y"} {
		if err := root.Put(ctx, k.Routing(f), state.Routing{Formation: f, Release: 1}); err != nil {
			t.Fatal(err)
		}
	}
	edge := c.Client(t, etcdauth.NewNames(prefix).Node("edge"))
	wakes := make(chan struct{}, 100)
	sc := newScope(edge, prefix, []view.Family{view.Routings, view.ACMEChallenges, view.Certs},
		func() {
			select {
			case wakes <- struct{}{}:
			default:
			}
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer sc.stop()
	sc.set(ctx, map[string]bool{"x": true})
	if _, _, err := readServed(ctx, edge, prefix, "x", []view.Family{view.Routings}); !etcdauth.IsPermissionDenied(err) {
		t.Fatalf("edge reads x before the grant: %v", err)
	}
	if _, ok := sc.get("x"); ok {
		t.Fatal("read x before it was granted")
	}
	if err := etcdauth.EnsureNode(ctx, c.Root, prefix, "edge", etcdauth.NodeOptions{Proxy: true, Serves: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "x read once granted", func() (bool, string) {
		d, ok := sc.get("x")
		return ok && d.Routing != nil && d.Routing.Doc != nil && d.Routing.Doc.Release == 1, ""
	})
	if err := root.Put(ctx, k.Routing("x"), state.Routing{Formation: "x", Release: 2}); err != nil {
		t.Fatal(err)
	}
	if err := root.Put(ctx, k.Cert("x", "www"), state.Cert{Formation: "x", Name: "www"}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "x's changes followed", func() (bool, string) {
		d, _ := sc.get("x")
		return d.Routing != nil && d.Routing.Doc != nil && d.Routing.Doc.Release == 2 && len(d.Certs) == 1, ""
	})
	if _, _, err := readServed(ctx, edge, prefix, "y", []view.Family{view.Routings}); !etcdauth.IsPermissionDenied(err) {
		t.Fatalf("edge reads y's routing: %v", err)
	}
	sc.set(ctx, map[string]bool{})
	if _, ok := sc.get("x"); ok {
		t.Fatal("x kept after it stopped being served")
	}
}
