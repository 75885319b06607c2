package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := Create(filepath.Join(t.TempDir(), "pki"), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCreateWritesPrivateKeyAndRefusesOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := Create(dir, "deis platform", 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %04o, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(dir)
	if di.Mode().Perm() != 0o700 {
		t.Errorf("CA dir mode %04o, want 0700", di.Mode().Perm())
	}
	if _, err := Create(dir, "again", 0); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second Create: %v, want already exists", err)
	}
	again, created, err := LoadOrCreate(dir, "ignored")
	if err != nil || created {
		t.Fatalf("LoadOrCreate: created=%v err=%v", created, err)
	}
	if !again.Cert.Equal(ca.Cert) {
		t.Fatal("LoadOrCreate loaded a different CA")
	}
}

func TestLoadOperatorCA(t *testing.T) {
	ca := newCA(t, "operator")
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "op.crt"), filepath.Join(dir, "op.key")
	if err := os.WriteFile(cp, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	key, _ := encodeKey(ca.key)
	if err := os.WriteFile(kp, key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cp, kp); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v, want a chmod hint", err)
	}
	os.Chmod(kp, 0o600)
	loaded, err := Load(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := loaded.IssueClient("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Verifier{CA: ca}).Verify([]*x509.Certificate{leaf.Cert}, Client, ""); err != nil {
		t.Fatalf("certificate of the loaded CA: %v", err)
	}
	// A leaf is not a CA; another CA's key does not fit.
	if err := os.WriteFile(cp, leaf.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cp, kp); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("leaf as CA: %v", err)
	}
	other := newCA(t, "other")
	os.WriteFile(cp, other.CertPEM, 0o644)
	if _, err := Load(cp, kp); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("mismatched key: %v", err)
	}
}

func TestIssueAndVerify(t *testing.T) {
	ca := newCA(t, "deis")
	v := &Verifier{CA: ca}
	srv, err := ca.IssueServer("etcd", []string{"127.0.0.1", "etcd.local"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify([]*x509.Certificate{srv.Cert}, Server, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify([]*x509.Certificate{srv.Cert}, Server, "etcd.local"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify([]*x509.Certificate{srv.Cert}, Server, "10.0.0.9"); !errors.Is(err, ErrWrongHost) {
		t.Fatalf("wrong host: %v", err)
	}
	if _, err := v.Verify([]*x509.Certificate{srv.Cert}, Client, ""); !errors.Is(err, ErrWrongUsage) {
		t.Fatalf("server cert as client: %v", err)
	}
	cl, _ := ca.IssueClient("deis:node-a", time.Hour)
	id, err := v.Verify([]*x509.Certificate{cl.Cert}, Client, "")
	if err != nil || id != "deis:node-a" {
		t.Fatalf("client: %q %v", id, err)
	}
	if _, err := v.Verify([]*x509.Certificate{cl.Cert}, Server, "127.0.0.1"); !errors.Is(err, ErrWrongUsage) {
		t.Fatalf("client cert as server: %v", err)
	}
	peer, _ := ca.IssuePeer("member1", []string{"127.0.0.1"}, 0)
	for _, u := range []Usage{Server, Client} {
		if _, err := v.Verify([]*x509.Certificate{peer.Cert}, u, ""); err != nil {
			t.Fatalf("peer as %s: %v", u, err)
		}
	}
	if _, err := ca.IssueServer("x", nil, 0); err == nil {
		t.Fatal("server certificate without hosts was issued")
	}
	if _, err := ca.Issue(Request{CommonName: "x"}); err == nil {
		t.Fatal("certificate without usage was issued")
	}
	// Files round trip, key private.
	dir := t.TempDir()
	cp, kp, err := cl.WriteFiles(dir, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(kp); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %04o", fi.Mode().Perm())
	}
	back, err := LoadLeaf(cp, kp)
	if err != nil || !back.Cert.Equal(cl.Cert) {
		t.Fatalf("LoadLeaf: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	ca := newCA(t, "deis")
	rv := NewRevoked()
	now := time.Now()
	v := &Verifier{CA: ca, Revoked: rv, FetchHint: "fetch it with deisctl ca"}

	foreign, _ := newCA(t, "evil").IssueClient("deis:node-a", time.Hour)
	_, err := v.Verify([]*x509.Certificate{foreign.Cert}, Client, "")
	if !errors.Is(err, ErrForeignCA) || !strings.Contains(err.Error(), "another CA") || !strings.Contains(err.Error(), "deisctl ca") {
		t.Fatalf("foreign CA: %v", err)
	}

	expired, err := ca.Issue(Request{CommonName: "old", Usage: Client, NotBefore: now.Add(-2 * time.Hour), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify([]*x509.Certificate{expired.Cert}, Client, ""); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired: %v", err)
	}
	future, _ := ca.Issue(Request{CommonName: "future", Usage: Client, NotBefore: now.Add(time.Hour), TTL: time.Hour})
	if _, err := v.Verify([]*x509.Certificate{future.Cert}, Client, ""); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "clock") {
		t.Fatalf("not yet valid: %v", err)
	}

	good, _ := ca.IssueClient("bob", time.Hour)
	if _, err := v.Verify([]*x509.Certificate{good.Cert}, Client, ""); err != nil {
		t.Fatal(err)
	}
	rv.Add(good.Cert.SerialNumber)
	if _, err := v.Verify([]*x509.Certificate{good.Cert}, Client, ""); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	if _, err := v.Verify(nil, Client, ""); !errors.Is(err, ErrNoCert) {
		t.Fatalf("none: %v", err)
	}
}

func TestRevokedPersistsAndCRL(t *testing.T) {
	ca := newCA(t, "deis")
	a, _ := ca.IssueClient("a", time.Hour)
	b, _ := ca.IssueClient("b", time.Hour)
	rv := NewRevoked()
	rv.Add(a.Cert.SerialNumber)
	p := filepath.Join(t.TempDir(), "revoked")
	if err := rv.Save(p); err != nil {
		t.Fatal(err)
	}
	back, err := LoadRevoked(p)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Has(a.Cert.SerialNumber) || back.Has(b.Cert.SerialNumber) {
		t.Fatal("revoked set did not round trip")
	}
	if err := back.UnmarshalText([]byte("zz\n")); err == nil {
		t.Fatal("bad serial accepted")
	}
	if !back.Has(a.Cert.SerialNumber) {
		t.Fatal("a failed parse changed the set")
	}
	missing, err := LoadRevoked(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(missing.Serials()) != 0 {
		t.Fatalf("missing file: %v", err)
	}
	crlPEM, err := ca.CRL(rv, 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(pemBody(t, crlPEM))
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("CRL entries %+v", crl.RevokedCertificateEntries)
	}
}

func pemBody(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

type logCapture struct {
	mu    sync.Mutex
	lines *[]string
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	*c.lines = append(*c.lines, string(p))
	c.mu.Unlock()
	return len(p), nil
}

// TestTLSServerAndClient runs a real HTTPS server with ServerTLS: a client
// of the platform CA gets through and is known by its identity; a client
// with no certificate, a foreign one, an expired one or a revoked one is
// refused; a client that trusts another CA refuses the server.
func TestTLSServerAndClient(t *testing.T) {
	ca := newCA(t, "deis")
	rv := NewRevoked()
	v := &Verifier{CA: ca, Revoked: rv}
	srvCert, err := ca.IssueServer("slugs", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+PeerIdentity(r))
	}))
	srv.TLS = ServerTLS(v, srvCert)
	capture := &logCapture{lines: &refused}
	srv.Config.ErrorLog = log.New(capture, "", 0)
	srv.StartTLS()
	defer srv.Close()

	get := func(cfg *tls.Config) (string, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	node, _ := ca.IssueClient("deis:node-a", time.Hour)
	body, err := get(ClientTLS(v, node))
	if err != nil || body != "hello deis:node-a" {
		t.Fatalf("good client: %q %v", body, err)
	}

	if _, err := get(ClientTLS(v, nil)); err == nil {
		t.Fatal("client without certificate got through")
	}
	foreign, _ := newCA(t, "evil").IssueClient("deis:node-a", time.Hour)
	_, err = get(ClientTLS(v, foreign))
	if err == nil {
		t.Fatal("client with a foreign certificate got through")
	}
	if ex := Explain(err); !strings.Contains(ex.Error(), "fetch the platform CA") {
		t.Errorf("Explain(%v) = %v", err, ex)
	}
	expired, _ := ca.Issue(Request{CommonName: "old", Usage: Client, NotBefore: time.Now().Add(-2 * time.Hour), TTL: time.Hour})
	if _, err := get(ClientTLS(v, expired)); err == nil {
		t.Fatal("expired client got through")
	}
	rv.Add(node.Cert.SerialNumber)
	if _, err := get(ClientTLS(v, node)); err == nil {
		t.Fatal("revoked client got through")
	}
	// The server's log names each cause.
	time.Sleep(100 * time.Millisecond)
	capture.mu.Lock()
	logged := strings.Join(refused, "\n")
	capture.mu.Unlock()
	for _, want := range []string{"no client certificate was presented", "another CA", "expired at", "was revoked"} {
		if !strings.Contains(logged, want) {
			t.Errorf("server log lacks %q:\n%s", want, logged)
		}
	}

	// A client trusting another CA refuses this server, and says why.
	other := newCA(t, "other")
	oc, _ := other.IssueClient("x", time.Hour)
	_, err = get(ClientTLS(&Verifier{CA: other}, oc))
	if err = Explain(err); !errors.Is(err, ErrForeignCA) || !strings.Contains(err.Error(), "fetch the platform CA") {
		t.Fatalf("client of another CA: %v", err)
	}
	// A server certificate for another host is refused.
	wrong, _ := ca.IssueServer("slugs", []string{"10.9.9.9"}, 0)
	srv2 := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv2.TLS = ServerTLS(v, wrong)
	srv2.StartTLS()
	defer srv2.Close()
	good2, _ := ca.IssueClient("b", time.Hour)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ClientTLS(v, good2)}, Timeout: 5 * time.Second}
	if _, err := c.Get(srv2.URL); !errors.Is(Explain(err), ErrWrongHost) || !strings.Contains(Explain(err).Error(), "10.9.9.9") {
		t.Fatalf("server for another host: %v", err)
	}
}

// TestJoinPrimitives: a node makes a key and a request; the CA signs it with
// the identity it decides, not the one asked for; a node pins the CA by its
// fingerprint before it has it.
func TestJoinPrimitives(t *testing.T) {
	ca := newCA(t, "deis")
	v := &Verifier{CA: ca}
	csr, key, keyPEM, err := NewCSR("deis:node-evil")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignCSR(csr, Request{CommonName: "deis:node-a", Usage: Client, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Cert.Subject.CommonName != "deis:node-a" || leaf.KeyPEM != nil {
		t.Fatalf("signed %q, key in leaf: %v", leaf.Cert.Subject.CommonName, leaf.KeyPEM != nil)
	}
	if !samePublicKey(leaf.Cert.PublicKey, key.Public()) {
		t.Fatal("certificate is not for the requester's key")
	}
	if _, err := v.Verify([]*x509.Certificate{leaf.Cert}, Client, ""); err != nil {
		t.Fatal(err)
	}
	if k, err := parseKey(keyPEM); err != nil || !samePublicKey(k.Public(), key.Public()) {
		t.Fatalf("key PEM: %v", err)
	}
	if _, err := ca.SignCSR([]byte("junk"), Request{CommonName: "x", Usage: Client}); err == nil {
		t.Fatal("junk request signed")
	}
	tampered := []byte(strings.Replace(string(csr), string(csr[40:44]), "AAAA", 1))
	if _, err := ca.SignCSR(tampered, Request{CommonName: "x", Usage: Client}); err == nil {
		t.Fatal("tampered request signed")
	}

	srvCert, _ := ca.IssueServer("coordinator", []string{"127.0.0.1"}, 0)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = ServerTLS(v, srvCert)
	srv.TLS.ClientAuth = tls.NoClientCert // the join endpoint: no client certificate yet
	srv.TLS.VerifyConnection = nil
	srv.StartTLS()
	defer srv.Close()
	get := func(cfg *tls.Config) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := c.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(PinnedTLS(ca.Fingerprint(), "127.0.0.1")); err != nil {
		t.Fatalf("pinned CA: %v", err)
	}
	if err := get(PinnedTLS(newCA(t, "other").Fingerprint(), "127.0.0.1")); !errors.Is(err, ErrForeignCA) {
		t.Fatalf("other fingerprint: %v", err)
	}
	if err := get(PinnedTLS(ca.Fingerprint(), "10.1.1.1")); !errors.Is(err, ErrWrongHost) {
		t.Fatalf("wrong host: %v", err)
	}
}
