// Package authtest starts a real, in-process etcd with TLS on its client and
// peer URLs, client certificate authentication (--client-cert-auth, every
// client needs a certificate of the test's platform CA, and its Common Name
// is its etcd user) and auth enabled, for tests of least privilege.
package authtest

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/testing/etcdtest"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a running secured etcd.
type Cluster struct {
	CA       *pki.CA
	Verifier *pki.Verifier
	Endpoint string // https://127.0.0.1:PORT
	// Root is a client authenticated as etcd's root user by a certificate.
	Root *clientv3.Client
	// Dir holds the CA, etcd's certificates and its data.
	Dir string
}

// Start runs the etcd for the test; it stops when the test ends.
func Start(t testing.TB) *Cluster { t.Helper(); return start(t, true) }

// StartTLSOnly is Start without etcd's auth enabled: TLS and client
// certificates only (a benchmark's baseline).
func StartTLSOnly(t testing.TB) *Cluster { t.Helper(); return start(t, false) }

func start(t testing.TB, auth bool) *Cluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.Create(filepath.Join(dir, "pki"), "deis test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	// etcd serves clients and peers with one peer certificate (both usages).
	srv, err := ca.IssuePeer("etcd", []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := srv.WriteFiles(filepath.Join(dir, "pki"), "etcd")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "pki", pki.CACertFile)
	cu, _ := url.Parse(fmt.Sprintf("https://127.0.0.1:%d", etcdtest.FreePort(t)))
	pu, _ := url.Parse(fmt.Sprintf("https://127.0.0.1:%d", etcdtest.FreePort(t)))

	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "data")
	cfg.Name = "deis"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	tls := transport.TLSInfo{CertFile: certPath, KeyFile: keyPath, TrustedCAFile: caPath, ClientCertAuth: true}
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = tls, tls
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatal("secured etcd not ready after 60s")
	}
	c := &Cluster{CA: ca, Verifier: &pki.Verifier{CA: ca}, Endpoint: cu.String(), Dir: dir}
	c.Root = c.Client(t, etcdauth.Root)
	if !auth {
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Enable(ctx, c.Root, ""); err != nil {
		t.Fatal(err)
	}
	return c
}

// Client issues a client certificate for identity (the etcd user) and
// returns a client using it; it closes when the test ends.
func (c *Cluster) Client(t testing.TB, identity string) *clientv3.Client {
	t.Helper()
	leaf, err := c.CA.IssueClient(identity, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.ClientWith(t, c.Verifier, leaf)
}

// ClientWith returns a client presenting leaf (nil for none) and trusting
// v's CA; it closes when the test ends. It does not check the connection.
func (c *Cluster) ClientWith(t testing.TB, v *pki.Verifier, leaf *pki.Leaf) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.Endpoint},
		DialTimeout: 5 * time.Second,
		TLS:         pki.ClientTLS(v, leaf),
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
