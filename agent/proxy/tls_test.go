package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/certtest"
	"github.com/deis/deis/testing/etcdtest"
)

// handshake connects over TLS with SNI name and returns the leaf served.
func (fx *fixture) handshake(name string) *x509.Certificate {
	fx.t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", "127.0.0.1:"+strconv.Itoa(fx.https), &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		fx.t.Fatalf("TLS handshake for %q: %v", name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// httpsGet sends GET over HTTPS to host, trusting pool.
func (fx *fixture) httpsGet(host, path string, pool *x509.CertPool) (*http.Response, string, error) {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(fx.https))
		}}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// TestHTTPSBySNI: the proxy serves each formation's certificate by SNI, the
// default certificate for other names, takes new and removed certificates
// without a reload, redirects and adds HSTS when asked, and answers ACME
// challenges; keys are private files of the agent.
func TestHTTPSBySNI(t *testing.T) {
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t), https: etcdtest.FreePort(t)}
	k := fx.store.Keys
	app := backend(t, "app")
	up := strings.TrimPrefix(app.URL, "http://")
	fx.put(k.Node("n1"), state.Node{Name: "n1", Labels: map[string]string{"role": "proxy"}})
	fx.put(k.Layer("web", "proxy"), state.Layer{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	rev := fx.routing("web", []string{"web.localhost", "www.example.com", "*.apps.example.com"}, up)

	ca := certtest.NewCA(t, "deis test CA")
	addCert := func(name string, names ...string) *state.Cert {
		chain, key := ca.Issue(t, names, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
		c, err := state.ParseCert(chain, key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.Name, c.Formation = name, "web"
		fx.put(k.Cert("web", name), c)
		return c
	}
	www := addCert("www.example.com", "www.example.com")
	p, reg, _ := fx.run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.StopNginx(ctx)
	})
	fx.waitAck("web", rev)
	pid := fx.masterPID()

	// SNI picks the certificate; the request is routed with a verified chain.
	eventually(t, "www.example.com served with its certificate", func() bool {
		return fx.handshake("www.example.com").Subject.CommonName == "www.example.com"
	})
	resp, body, err := fx.httpsGet("www.example.com", "/echo", ca.Pool())
	if err != nil || resp.StatusCode != 200 || !strings.Contains(body, "xfp=https") {
		t.Fatalf("GET https://www.example.com/echo: %v %q", err, body)
	}
	if resp.Header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent without being asked for")
	}
	// Unknown names and names without a certificate get the default one.
	for _, n := range []string{"web.localhost", "nothing.example.org"} {
		if cn := fx.handshake(n).Subject.CommonName; cn != "deis default certificate" {
			t.Errorf("%s served %q, want the default certificate", n, cn)
		}
	}

	// Adding and removing a certificate needs no reload.
	addCert("wildcard.apps.example.com", "*.apps.example.com")
	eventually(t, "the wildcard certificate served", func() bool {
		return fx.handshake("a.apps.example.com").Subject.CommonName == "*.apps.example.com"
	})
	if _, err := fx.cli.Delete(context.Background(), k.Cert("web", www.Name)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "www.example.com back on the default certificate", func() bool {
		return fx.handshake("www.example.com").Subject.CommonName == "deis default certificate"
	})
	if got := fx.masterPID(); got != pid {
		t.Errorf("nginx master changed from %d to %d", pid, got)
	}
	if n := metric(t, reg, "deis_proxy_reloads_total"); n != 1 {
		t.Errorf("deis_proxy_reloads_total = %v, want 1 (the start)", n)
	}
	if n := metric(t, reg, "deis_proxy_certificate_updates_total"); n < 3 {
		t.Errorf("deis_proxy_certificate_updates_total = %v, want at least 3 (first, added, removed)", n)
	}

	// Redirect and HSTS, carried in the routing databag.
	r := routing("web", []string{"web.localhost", "www.example.com", "*.apps.example.com"}, up)
	r.HTTPS = &state.HTTPS{Redirect: true, HSTSMaxAge: 600}
	rev = fx.put(k.Routing("web"), r)
	fx.put(k.ACMEChallenge("web", "tok-1"), state.ACMEChallenge{Domain: "a.apps.example.com", Token: "tok-1", KeyAuth: "tok-1.thumb"})
	fx.waitAck("web", rev)
	eventually(t, "the ACME challenge answered", func() bool {
		code, body, err := fx.get(http.MethodGet, "a.apps.example.com", "/.well-known/acme-challenge/tok-1", nil)
		return err == nil && code == 200 && body == "tok-1.thumb"
	})
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(fx.port)+"/x?y=1", nil)
	req.Host = "b.apps.example.com"
	hr, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if want := "https://b.apps.example.com:" + strconv.Itoa(fx.https) + "/x?y=1"; hr.StatusCode != 308 || hr.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %d %q, want 308 to %s", hr.StatusCode, hr.Header.Get("Location"), want)
	}
	resp, body, err = fx.httpsGet("b.apps.example.com", "/", ca.Pool())
	if err != nil || resp.StatusCode != 200 || body != "app" || resp.Header.Get("Strict-Transport-Security") != "max-age=600" {
		t.Errorf("HTTPS with HSTS: %v %v %q", err, resp, body)
	}

	// Keys: root-only files in the private prefix.
	for _, f := range []string{p.paths.certsTable(), p.paths.defaultKey()} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
			t.Errorf("%s is %v, want 0600 of the agent's user", f, fi.Mode())
		}
	}
	if fi, _ := os.Stat(p.paths.Prefix); fi.Mode().Perm() != 0o700 {
		t.Errorf("prefix is %v, want 0700", fi.Mode())
	}
}
