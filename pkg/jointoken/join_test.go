package jointoken_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdauth/authtest"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestJoin: on a secured etcd, a node trades its token and certificate
// request for a certificate whose key never left it, and that certificate
// writes only its own keys. A bad request burns no token; a used token joins
// nobody.
func TestJoin(t *testing.T) {
	cl := authtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const prefix = "/deis"
	keys, names := state.NewKeys(prefix), etcdauth.NewNames(prefix)
	if err := etcdauth.EnsureCoordinator(ctx, cl.Root, prefix, ""); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "admin", etcdauth.UserOptions{Admin: true}); err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.New(cl.Client(t, names.User("admin")), prefix).Create(ctx, "edge-1", map[string]string{"role": "runtime,proxy"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	iss := &jointoken.Issuer{Tokens: jointoken.New(cl.Client(t, names.Coordinator()), prefix), CA: cl.CA, Auth: cl.Root, Prefix: prefix}

	if _, err := iss.Join(ctx, tok.String(), "edge-1", []byte("not a request")); err == nil {
		t.Fatal("bad request accepted")
	}
	if _, err := cl.Root.UserGet(ctx, names.Node("edge-1")); err == nil {
		t.Fatal("a refused join made an etcd user")
	}
	csr, _, keyPEM, err := pki.NewCSR("whatever")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Join(ctx, tok.String(), "edge-2", csr); !errors.Is(err, jointoken.ErrWrongNode) {
		t.Fatalf("wrong node: %v", err)
	}
	creds, err := iss.Join(ctx, tok.String(), "edge-1", csr)
	if err != nil {
		t.Fatal(err)
	}
	if creds.Node != "edge-1" || creds.EtcdUser != names.Node("edge-1") || creds.Labels["role"] != "runtime,proxy" {
		t.Fatalf("credentials %+v", creds)
	}
	if _, err := iss.Join(ctx, tok.String(), "edge-1", csr); !errors.Is(err, jointoken.ErrUsed) {
		t.Fatalf("second join with the token: %v", err)
	}

	// The node dials etcd with its own key and the certificate it got.
	leaf, err := pki.ParseLeaf(creds.CertPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if string(creds.CAPEM) != string(cl.CA.CertPEM) {
		t.Fatal("credentials carry another CA")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cl.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: pki.ClientTLS(cl.Verifier, leaf)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctx, keys.NodeStatus("edge-1"), "{}"); err != nil {
		t.Fatalf("joined node writes its status: %v", err)
	}
	if _, err := c.Get(ctx, keys.AllLayers(), clientv3.WithPrefix()); err != nil {
		t.Fatalf("joined proxy reads layers: %v", err)
	}
	// Only the formations its proxy layers select (granted by the access
	// loop, coordinator/access), never every routing databag.
	if _, err := c.Get(ctx, keys.Routings(), clientv3.WithPrefix()); !etcdauth.IsPermissionDenied(err) {
		t.Fatalf("joined proxy lists every routing databag: %v", err)
	}
	if _, err := c.Put(ctx, keys.NodeStatus("other"), "{}"); !etcdauth.IsPermissionDenied(err) {
		t.Fatalf("joined node writes another's status: %v", err)
	}
}
