package ctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/certtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// certs:add validates the chain and key, says which domains it covers,
// and refuses bad input with one line, writing nothing.
func TestCertsAddValidates(t *testing.T) {
	c := newCluster(t)
	c.ok("formations:create", "hello")
	c.ok("domains:add", "www.example.com", "-f", "hello")
	dir := t.TempDir()
	ca := certtest.NewCA(t, "test CA")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	goodCrt, goodKey := ca.Files(t, dir, "www.example.com", "api.example.com")
	otherCrt, otherKey := ca.Files(t, dir, "other.org")
	oldChain, oldKey := ca.Issue(t, []string{"www.example.com"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	oldCrt, oldKeyP := write("old.crt", oldChain), write("old.key", oldKey)
	garbage := write("garbage", []byte("not pem\n"))

	c.fails("no PEM certificate found in the certificate file", "certs:add", garbage, goodKey, "-f", "hello")
	c.fails("no PEM private key found in the key file", "certs:add", goodCrt, garbage, "-f", "hello")
	c.fails("the private key does not belong to the certificate", "certs:add", goodCrt, otherKey, "-f", "hello")
	c.fails("the key file holds a certificate", "certs:add", goodCrt, goodCrt, "-f", "hello")
	c.fails("the certificate expired on", "certs:add", oldCrt, oldKeyP, "-f", "hello")
	c.fails("the certificate covers none of hello's domains (it names other.org; hello serves hello.localhost, www.example.com)", "certs:add", otherCrt, otherKey, "-f", "hello")
	c.fails("cannot read the certificate", "certs:add", filepath.Join(dir, "missing"), goodKey, "-f", "hello")
	c.fails("invalid certificate name", "certs:add", goodCrt, goodKey, "--name", "../x", "-f", "hello")
	c.fails("the name auto is kept for the certificate deisctl certs:auto obtains", "certs:add", goodCrt, goodKey, "--name", "auto", "-f", "hello")
	c.fails("formation \"nope\" not found", "certs:add", goodCrt, goodKey, "-f", "nope")

	out := c.ok("certs:add", goodCrt, goodKey, "-f", "hello")
	contains(t, out, "Adding certificate api.example.com to hello... done", "Covered: www.example.com", "Not covered (served with the proxies' default certificate): hello.localhost")
	var stored state.Cert
	if _, err := c.store.Get(t.Context(), c.store.Keys.Cert("hello", "api.example.com"), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Auto || !strings.Contains(stored.KeyPEM, "PRIVATE KEY") || len(stored.Domains) != 2 {
		t.Fatalf("stored cert: %+v", stored)
	}

	out = c.ok("certs", "-f", "hello")
	contains(t, out, "api.example.com", "www.example.com", "manual", "Redirect HTTP to HTTPS: off; HSTS: off")
	js := c.ok("certs", "-f", "hello", "--json")
	if strings.Contains(js, "PRIVATE") {
		t.Fatal("certs --json prints the private key")
	}
	var list certsListJSON
	if err := json.Unmarshal([]byte(js), &list); err != nil || len(list.Certs) != 1 || list.Certs[0].Covers[0] != "www.example.com" {
		t.Fatalf("certs --json: %v %s", err, js)
	}
	contains(t, c.ok("certs:info", "api.example.com", "-f", "hello"), "Covers:", "www.example.com", "Not covered:", "hello.localhost", "test CA")
	c.fails("certificate nope.example.com of hello not found", "certs:info", "nope.example.com", "-f", "hello")

	// Redirect and HSTS.
	c.fails("usage", "certs:redirect", "maybe", "-f", "hello")
	c.fails("invalid HSTS max-age \"forever\"", "certs:hsts", "forever", "-f", "hello")
	c.fails("invalid HSTS max-age \"0\"", "certs:hsts", "0", "-f", "hello")
	contains(t, c.ok("certs:redirect", "on", "-f", "hello"), "Redirecting HTTP to HTTPS for hello... done")
	contains(t, c.ok("certs:redirect", "on", "-f", "hello"), "no change")
	contains(t, c.ok("certs:hsts", "31536000", "-f", "hello"), "HSTS max-age=31536000 for hello... done")
	f, _, err := c.store.GetFormation(t.Context(), "hello")
	if err != nil || f.HTTPS == nil || !f.HTTPS.Redirect || f.HTTPS.HSTSMaxAge != 31536000 {
		t.Fatalf("formation https = %+v, %v", f.HTTPS, err)
	}
	contains(t, c.ok("certs:auto", "on", "-f", "hello"), "Automatic certificates (ACME) on for hello... done")
	c.put(c.store.Keys.ACMEStatus("hello"), state.ACMEStatus{Error: "acme: validation: 403 unauthorized", At: time.Now(), Retry: time.Now().Add(time.Minute)})
	contains(t, c.ok("certs", "-f", "hello"), "automatic certificates: on", "The last certificate order failed at", "acme: validation: 403 unauthorized; the coordinator retries at")

	contains(t, c.ok("certs:remove", "api.example.com", "-f", "hello"), "Removing certificate api.example.com from hello... done")
	c.fails("certificate api.example.com of hello not found", "certs:remove", "api.example.com", "-f", "hello")

	// Without a certificate and without auto, redirect is refused.
	c.ok("certs:auto", "off", "-f", "hello")
	c.ok("certs:redirect", "off", "-f", "hello")
	c.fails("hello has no certificate, so browsers would refuse the HTTPS it redirects to", "certs:redirect", "on", "-f", "hello")

	// destroy removes certificates.
	c.ok("certs:add", goodCrt, goodKey, "-f", "hello")
	c.ok("formations:destroy", "hello", "--confirm", "hello")
	resp, err := c.cli.Get(t.Context(), c.store.Keys.AllCerts(), clientv3.WithPrefix())
	if err != nil || resp.Count != 0 {
		t.Fatalf("certificates left after destroy: %v %v", resp, err)
	}
}
