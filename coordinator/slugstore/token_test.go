package slugstore

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRequireToken(t *testing.T) {
	s, _ := New(t.TempDir())
	ref, _ := s.Put(bytes.NewReader([]byte("slug")))
	srv := httptest.NewServer(RequireToken("sekrit-token-0123456789", s.Handler()))
	defer srv.Close()
	for _, tc := range []struct {
		auth string
		code int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Basic sekrit-token-0123456789", http.StatusUnauthorized},
		{"Bearer sekrit-token-0123456789", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/slugs/"+ref.SHA256+".tgz", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, resp.StatusCode, tc.code)
		}
		if tc.code == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
}

func TestListAndRemove(t *testing.T) {
	s, _ := New(t.TempDir())
	a, _ := s.Put(bytes.NewReader([]byte("a")))
	b, _ := s.Put(bytes.NewReader([]byte("bb")))
	// an interrupted upload, old and new
	old := filepath.Join(s.Dir, ".incoming-old.tgz")
	os.WriteFile(old, []byte("x"), 0o644)
	os.Chtimes(old, time.Now().Add(-48*time.Hour), time.Now().Add(-48*time.Hour))
	os.WriteFile(filepath.Join(s.Dir, ".incoming-new.tgz"), []byte("x"), 0o644)

	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := s.Remove(a.SHA256); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(a.SHA256); err != nil { // already gone: fine
		t.Fatal(err)
	}
	if err := s.Remove("../etc"); err == nil {
		t.Fatal("Remove accepted a path")
	}
	list, _ = s.List()
	if len(list) != 1 || list[0].SHA256 != b.SHA256 || list[0].Size != 2 {
		t.Fatalf("after Remove: %+v", list)
	}
	if n, err := s.RemoveIncoming(24 * time.Hour); err != nil || n != 1 {
		t.Fatalf("RemoveIncoming = %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, ".incoming-new.tgz")); err != nil {
		t.Error("a recent upload was removed")
	}
}
