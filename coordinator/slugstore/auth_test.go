package slugstore

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/deis/deis/testing/pkitest"
)

// The slug server serves over TLS with client certificates of the platform
// CA, to nodes and coordinators only.
func TestRequirePlatform(t *testing.T) {
	s, _ := New(t.TempDir())
	ref, _ := s.Put(bytes.NewReader([]byte("slug")))
	ca := pkitest.New(t)
	srv := httptest.NewUnstartedServer(RequirePlatform("/deis", s.Handler()))
	srv.TLS = ca.ServerTLS("deis:coordinator")
	srv.StartTLS()
	defer srv.Close()
	url := srv.URL + "/slugs/" + ref.SHA256 + ".tgz"
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		code int // 0: the handshake fails
		msg  string
	}{
		{"no certificate", ca.ClientTLS(""), 0, ""},
		{"a foreign CA's node certificate", ca.Foreign("deis:node-n1"), 0, ""},
		{"a user", ca.ClientTLS("deis:user-alice"), http.StatusForbidden, "alice may not fetch slugs"},
		{"another installation's node", ca.ClientTLS("other:node-n1"), http.StatusForbidden, "may not fetch slugs"},
		{"a node", ca.ClientTLS("deis:node-n1"), http.StatusOK, "slug"},
		{"a coordinator", ca.ClientTLS("deis:coordinator"), http.StatusOK, "slug"},
	} {
		resp, err := pkitest.HTTPClient(tc.tls).Get(url)
		if tc.code == 0 {
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s: answered %s, want the handshake refused", tc.name, resp.Status)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: %s %q, want %d with %q", tc.name, resp.Status, body, tc.code, tc.msg)
		}
	}
	// Plain HTTP to the TLS port is refused.
	resp, err := http.Get(strings.Replace(url, "https://", "http://", 1))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP got the slug")
		}
	}
	// Behind no TLS at all, the handler refuses too.
	plain := httptest.NewServer(RequirePlatform("/deis", s.Handler()))
	defer plain.Close()
	resp, err = http.Get(plain.URL + "/slugs/" + ref.SHA256 + ".tgz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("without TLS: %s, want 403", resp.Status)
	}
}
