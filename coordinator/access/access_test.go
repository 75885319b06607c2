package access

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdauth/authtest"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A node joins, the access loop keeps its user while it is recorded, and
// removes it (and its heartbeat) once nodes:remove has revoked it; a
// refused join changes nothing.
func TestJoinSyncAndRemove(t *testing.T) {
	c := authtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := Secure(ctx, c.Root, ""); err != nil {
		t.Fatal(err)
	}
	if err := Secure(ctx, c.Root, ""); err != nil {
		t.Fatalf("Secure is not idempotent: %v", err)
	}
	var mu sync.Mutex
	js := &JoinServer{Root: c.Root, CA: c.CA, Prefix: "", Endpoints: []string{c.Endpoint}, Log: log, Lock: &mu}
	sy := &Syncer{Root: c.Root, Prefix: "", Log: log, Lock: &mu}
	tokens := jointoken.New(c.Root, "")
	store := state.NewStore(c.Root, "")
	k := state.NewKeys("")

	// A bad token: nothing recorded.
	csr, _, _, err := pki.NewCSR("whatever")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Join(ctx, jointoken.JoinRequest{Token: "0123456789abcdef." + strings.Repeat("A", 43), Node: "n1", CSR: string(csr)}); !errors.Is(err, jointoken.ErrUnknown) {
		t.Fatalf("unknown token: %v", err)
	}
	tok, err := tokens.Create(ctx, "n1", map[string]string{"role": "runtime"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Join(ctx, jointoken.JoinRequest{Token: tok.Secret, Node: "n2", CSR: string(csr)}); !errors.Is(err, jointoken.ErrWrongNode) {
		t.Fatalf("token of another node: %v", err)
	}
	var m jointoken.Member
	if _, err := store.Get(ctx, jointoken.MemberKey("", "n1"), &m); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("a refused join left a record: %v", err)
	}

	resp, err := js.Join(ctx, jointoken.JoinRequest{Token: tok.Secret, Node: "n1", CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.EtcdUser != "deis:node-n1" || !strings.Contains(resp.CA, "CERTIFICATE") || resp.Endpoints[0] != c.Endpoint {
		t.Fatalf("join answer %+v", resp)
	}
	if _, err := store.Get(ctx, jointoken.MemberKey("", "n1"), &m); err != nil || m.Serial == "" {
		t.Fatalf("member record %+v: %v", m, err)
	}
	if err := sy.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Root.UserGet(ctx, "deis:node-n1"); err != nil {
		t.Fatalf("the loop removed a joined node's user: %v", err)
	}
	if _, err := c.Root.UserGet(ctx, "deis:user-admin"); err != nil {
		t.Fatalf("the administrator has no etcd user: %v", err)
	}
	node := c.Client(t, "deis:node-n1")
	lease, err := node.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Put(ctx, k.Heartbeat("n1"), "{}", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("node writes its heartbeat: %v", err)
	}

	// nodes:remove: the record goes, the serial is revoked.
	serial, _ := new(big.Int).SetString(m.Serial, 16)
	if _, err := c.Root.Txn(ctx).Then(clientv3.OpDelete(jointoken.MemberKey("", "n1")),
		clientv3.OpPut(jointoken.RevocationKey("", serial), state.Marshal(jointoken.Revocation{Node: "n1", Serial: m.Serial}))).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := sy.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Root.Get(ctx, k.Heartbeat("n1")); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("the removed node's heartbeat stays: %v %v", r, err)
	}
	if _, err := node.Put(ctx, k.Heartbeat("n1"), "{}"); !etcdauth.IsPermissionDenied(err) {
		t.Fatalf("the removed node still writes its heartbeat: %v", err)
	}
	revoked := pki.NewRevoked()
	wctx, wcancel := context.WithCancel(ctx)
	go WatchRevoked(wctx, c.Root, "", revoked, log)
	deadline := time.Now().Add(20 * time.Second)
	for !revoked.Has(serial) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	wcancel()
	if !revoked.Has(serial) {
		t.Fatal("WatchRevoked did not revoke the serial")
	}
}

// A proxy node reads the routing, certificates and challenges of the
// formations whose proxy layer selects it, and no other formation's; the
// running loop moves the grant when a layer's selector changes.
func TestProxyReadsOnlyItsFormations(t *testing.T) {
	c := authtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := Secure(ctx, c.Root, ""); err != nil {
		t.Fatal(err)
	}
	store := state.NewStore(c.Root, "")
	k := state.NewKeys("")
	if err := store.Put(ctx, jointoken.MemberKey("", "edge"), jointoken.Member{Node: "edge", Labels: map[string]string{"role": "proxy", "zone": "a"}}); err != nil {
		t.Fatal(err)
	}
	layer := func(f, zone string) {
		t.Helper()
		l := state.Layer{Formation: f, Name: "edge", Type: state.LayerProxy, Selector: map[string]string{"zone": zone}}
		if err := store.Put(ctx, k.Layer(f, "edge"), l); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"x", "y"} {
		for _, key := range []string{k.Formation(f), k.Routing(f), k.Cert(f, "www"), k.ACMEChallenge(f, "tok")} {
			if _, err := c.Root.Put(ctx, key, "{}"); err != nil {
				t.Fatal(err)
			}
		}
	}
	layer("x", "a")
	layer("y", "b")
	sy := &Syncer{Root: c.Root, Prefix: "", Log: log, Resync: time.Hour}
	if err := sy.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	edge := c.Client(t, "deis:node-edge")
	reads := func(f string) map[string]error {
		out := map[string]error{}
		_, out["routing"] = edge.Get(ctx, k.Routing(f))
		_, out["certs"] = edge.Get(ctx, k.Certs(f), clientv3.WithPrefix())
		_, out["challenges"] = edge.Get(ctx, k.ACMEChallenges(f), clientv3.WithPrefix())
		return out
	}
	check := func(f string, want bool) {
		t.Helper()
		for what, err := range reads(f) {
			if want && err != nil {
				t.Errorf("edge cannot read %s of %s, which it proxies: %v", what, f, err)
			}
			if !want && !etcdauth.IsPermissionDenied(err) {
				t.Errorf("edge reads %s of %s, which it does not proxy: %v", what, f, err)
			}
		}
	}
	check("x", true)
	check("y", false)
	if _, err := edge.Get(ctx, k.Routings(), clientv3.WithPrefix()); !etcdauth.IsPermissionDenied(err) {
		t.Errorf("edge lists every routing databag: %v", err)
	}
	if _, err := edge.Get(ctx, k.AllCerts(), clientv3.WithPrefix()); !etcdauth.IsPermissionDenied(err) {
		t.Errorf("edge lists every certificate: %v", err)
	}

	// The running loop wakes on the layer change and moves the grant.
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = sy.Run(rctx) }()
	defer func() { rcancel(); <-done }()
	layer("x", "b")
	layer("y", "a")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, ey := edge.Get(ctx, k.Routing("y"))
		_, ex := edge.Get(ctx, k.Routing("x"))
		if ey == nil && etcdauth.IsPermissionDenied(ex) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	check("y", true)
	check("x", false)
}
