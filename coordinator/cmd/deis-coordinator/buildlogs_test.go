package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deis/deis/testing/pkitest"
)

// grants is who may access which formation ("f/user").
type grants map[string]bool

func (g grants) MayAccess(_ context.Context, f, user string) (bool, error) { return g[f+"/"+user], nil }

func TestBuildLogHandler(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "builds", "hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "builds", "hello", "b20240101120000000000-abc1234.log"), []byte("-----> Building\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.log"), []byte("secret"), 0o640); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /builds/{formation}/{file}", buildLogHandler(dir, "/deis", grants{"hello/alice": true}))
	ca := pkitest.New(t)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = ca.ServerTLS("deis:coordinator")
	srv.StartTLS()
	defer srv.Close()

	admin, alice, bob := ca.ClientTLS("deis:coordinator"), ca.ClientTLS("deis:user-alice"), ca.ClientTLS("deis:user-bob")
	for _, tc := range []struct {
		path string
		tls  *tls.Config
		code int
		body string
	}{
		{"/builds/hello/b20240101120000000000-abc1234.log", admin, http.StatusOK, "-----> Building\n"},
		{"/builds/hello/b20240101120000000000-abc1234.log", alice, http.StatusOK, "-----> Building\n"},
		{"/builds/hello/b20240101120000000000-abc1234.log", bob, http.StatusForbidden, "bob may not change hello: ask an administrator for deisctl perms:grant bob -f hello"},
		{"/builds/hello/b20240101120000000000-abc1234.log", ca.ClientTLS("deis:node-n1"), http.StatusForbidden, ""},
		{"/builds/hello/b1.log", admin, http.StatusNotFound, ""},
		{"/builds/hello/B1.log", admin, http.StatusBadRequest, ""},
		{"/builds/hello/b1.txt", admin, http.StatusBadRequest, ""},
		{"/builds/hello/..%2Fsecret.log", admin, http.StatusBadRequest, ""},
		{"/builds/Hello/b1.log", admin, http.StatusBadRequest, ""},
	} {
		resp, err := pkitest.HTTPClient(tc.tls).Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		who := tc.tls.Certificates[0].Leaf.Subject.CommonName
		if resp.StatusCode != tc.code || (tc.body != "" && !strings.HasPrefix(string(body), tc.body)) {
			t.Errorf("GET %s as %s: %s %q, want %d %q", tc.path, who, resp.Status, body, tc.code, tc.body)
		}
	}
	if _, err := pkitest.HTTPClient(ca.ClientTLS("")).Get(srv.URL + "/builds/hello/b20240101120000000000-abc1234.log"); err == nil {
		t.Error("a build log without a certificate")
	}
}
