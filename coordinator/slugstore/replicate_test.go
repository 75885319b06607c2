package slugstore

import (
	"bytes"
	"context"
	"github.com/deis/deis/testing/pkitest"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// coord is one coordinator of the test: a store, its slug server (TLS,
// nodes and coordinators only), its registration and its replicator.
type coord struct {
	id    string
	slugs *Store
	srv   *httptest.Server
	rep   *Replicator
}

func newCoord(t *testing.T, cli *clientv3.Client, st *state.Store, id string, handler func(*Store) http.Handler) *coord {
	t.Helper()
	slugs, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := slugs.Handler()
	if handler != nil {
		h = handler(slugs)
	}
	srv := httptest.NewUnstartedServer(RequirePlatform(st.Keys.Prefix, h))
	srv.TLS = testCA(t).ServerTLS("t:coordinator")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rep, err := NewReplicator(ReplicatorConfig{Slugs: slugs, State: st, Watcher: cli, Member: id, TLS: testCA(t).ClientTLS("t:coordinator"),
		MaxBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Register(ctx, cli, st, state.CoordinatorMember{ID: id, SlugURL: srv.URL}, 5, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool {
		m, _, err := st.Members(context.Background())
		return err == nil && m[id].SlugURL == srv.URL
	})
	return &coord{id: id, slugs: slugs, srv: srv, rep: rep}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func holders(t *testing.T, st *state.Store, sha string) []string {
	t.Helper()
	h, err := st.Holders(context.Background(), sha)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range h {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func TestReplicatorCopiesAndRefusesWrongBytes(t *testing.T) {
	_, cli := etcdtest.Start(t)
	st := state.NewStore(cli, "/t")
	ctx := context.Background()

	a := newCoord(t, cli, st, "a", nil)
	// liar answers every slug request with other bytes
	liar := newCoord(t, cli, st, "liar", func(*Store) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bytes.Repeat([]byte("x"), 64)) })
	})
	b := newCoord(t, cli, st, "b", nil)

	// a builds a slug and records it; b waits for a second copy
	body := bytes.Repeat([]byte("slug "), 4000)
	ref, err := a.slugs.Put(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.rep.Hold(ctx, ref); err != nil {
		t.Fatal(err)
	}
	awaited := make(chan error, 1)
	var said []string
	go func() {
		awaited <- a.rep.AwaitCopies(ctx, ref.SHA256, 20*time.Second, func(s string) { said = append(said, s) })
	}()
	if err := b.rep.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-awaited; err != nil {
		t.Fatalf("AwaitCopies: %v", err)
	}
	if got := holders(t, st, ref.SHA256); strings.Join(got, ",") != "a,b" {
		t.Fatalf("holders %v, want a,b", got)
	}
	if n, err := b.slugs.Verify(ref.SHA256); err != nil || n != ref.Size {
		t.Fatalf("b's copy: %d bytes, %v", n, err)
	}
	if len(said) == 0 || !strings.Contains(said[len(said)-1], "Stored on 2 coordinators") {
		t.Errorf("progress: %q", said)
	}

	// A slug only the liar claims: b refuses its bytes and records nothing.
	fake := bytes.Repeat([]byte("other slug "), 100)
	fref, _ := New(t.TempDir())
	fakeRef, _ := fref.Put(bytes.NewReader(fake))
	if _, err := st.PutHolder(ctx, fakeRef.SHA256, "liar", fakeRef.Size, false); err != nil {
		t.Fatal(err)
	}
	err = b.rep.Pass(ctx)
	if err == nil || !strings.Contains(err.Error(), "does not match its sha256") {
		t.Fatalf("Pass with a lying holder: %v", err)
	}
	if b.slugs.Has(fakeRef.SHA256) {
		t.Fatal("b stored what the liar served")
	}
	if got := holders(t, st, fakeRef.SHA256); strings.Join(got, ",") != "liar" {
		t.Fatalf("holders of the liar's slug: %v", got)
	}
	list, _ := b.slugs.List()
	if len(list) != 1 {
		t.Fatalf("b's store: %+v", list)
	}
	// and a's build of it would fail, not release an unreplicated slug
	err = liar.rep.AwaitCopies(ctx, fakeRef.SHA256, 300*time.Millisecond, func(string) {})
	if err == nil || !strings.Contains(err.Error(), "stored on this coordinator only") {
		t.Fatalf("AwaitCopies with nobody able to copy: %v", err)
	}

	// Once the honest a holds it too, b gets it from a despite the liar
	// (after its failure backoff).
	if _, err := a.slugs.Put(bytes.NewReader(fake)); err != nil {
		t.Fatal(err)
	}
	if err := a.rep.Hold(ctx, fakeRef); err != nil {
		t.Fatal(err)
	}
	if err := b.rep.Fetch(ctx, fakeRef, []string{
		state.SlugFileURL(liar.srv.URL, fakeRef.SHA256), state.SlugFileURL(a.srv.URL, fakeRef.SHA256)}); err != nil {
		t.Fatal(err)
	}
	if got := holders(t, st, fakeRef.SHA256); strings.Join(got, ",") != "a,b,liar" {
		t.Fatalf("holders: %v", got)
	}

	// GC deleted a slug's holder keys: nobody fetches it back, and a
	// copy that lost its key is not recorded again.
	c := newCoord(t, cli, st, "c", nil)
	if ok, err := st.DeleteHolders(ctx, ref.SHA256, 1<<40); err != nil || !ok {
		t.Fatalf("DeleteHolders: %v %v", ok, err)
	}
	if err := c.rep.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if c.slugs.Has(ref.SHA256) || !c.slugs.Has(fakeRef.SHA256) {
		t.Fatalf("c holds the collected slug %v, the live one %v", c.slugs.Has(ref.SHA256), c.slugs.Has(fakeRef.SHA256))
	}
	if err := b.rep.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := holders(t, st, ref.SHA256); len(got) != 0 {
		t.Fatalf("collected slug recorded again by %v", got)
	}

	// A holder key whose file vanished is dropped and the file fetched again.
	if err := c.slugs.Remove(fakeRef.SHA256); err != nil {
		t.Fatal(err)
	}
	if err := c.rep.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.slugs.Verify(fakeRef.SHA256); err != nil {
		t.Fatalf("c did not fetch its lost copy again: %v", err)
	}
}

// With no other coordinator running, a build does not wait.
func TestAwaitCopiesAlone(t *testing.T) {
	_, cli := etcdtest.Start(t)
	st := state.NewStore(cli, "/t")
	a := newCoord(t, cli, st, "a", nil)
	ref, _ := a.slugs.Put(strings.NewReader("slug"))
	if err := a.rep.Hold(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if err := a.rep.AwaitCopies(context.Background(), ref.SHA256, time.Second, func(string) {}); err != nil {
		t.Fatal(err)
	}
}

func TestPutVerified(t *testing.T) {
	s, _ := New(t.TempDir())
	good, _ := New(t.TempDir())
	ref, _ := good.Put(strings.NewReader("the slug"))
	for _, body := range []string{"another", "the slug and more", "the slu"} {
		if _, err := s.PutVerified(strings.NewReader(body), ref); err == nil {
			t.Errorf("PutVerified(%q) accepted", body)
		}
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("refused content kept: %+v", list)
	}
	if got, err := s.PutVerified(strings.NewReader("the slug"), ref); err != nil || got != ref {
		t.Fatalf("PutVerified = %+v, %v", got, err)
	}
	if _, err := s.PutVerified(strings.NewReader("x"), state.SlugRef{SHA256: "../x"}); err == nil {
		t.Fatal("bad sha accepted")
	}
}

// testCAs is one CA per test, shared by its coordinators.
var testCAs sync.Map

func testCA(t *testing.T) *pkitest.CA {
	if ca, ok := testCAs.Load(t.Name()); ok {
		return ca.(*pkitest.CA)
	}
	ca, _ := testCAs.LoadOrStore(t.Name(), pkitest.New(t))
	return ca.(*pkitest.CA)
}
