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
