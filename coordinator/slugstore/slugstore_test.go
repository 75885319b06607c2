package slugstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestPutAndServe(t *testing.T) {
	s, err := New(filepath.Join(t.TempDir(), "slugs"))
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("slug bytes "), 1000)
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])

	ref, err := s.Put(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ref.SHA256 != want || ref.Size != int64(len(body)) {
		t.Fatalf("Put = %+v, want sha %s size %d", ref, want, len(body))
	}
	// the same content again lands on the same file, and no temp file is left
	if ref2, err := s.Put(bytes.NewReader(body)); err != nil || ref2 != ref {
		t.Fatalf("second Put = %+v, %v", ref2, err)
	}
	entries, _ := os.ReadDir(s.Dir)
	if len(entries) != 1 || entries[0].Name() != want+".tgz" {
		t.Fatalf("store holds %v, want only %s.tgz", entries, want)
	}

	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/slugs/" + want + ".tgz")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("GET = %d, %d bytes; want 200 and the slug", resp.StatusCode, len(got))
	}

	for _, path := range []string{
		"/slugs/" + hex.EncodeToString(make([]byte, 32)) + ".tgz", // well formed, not stored
		"/slugs/" + want,                      // no .tgz
		"/slugs/" + want[:63] + ".tgz",        // too short
		"/slugs/" + "ABC" + want[3:] + ".tgz", // not lowercase hex
		"/slugs/../slugs/" + want + ".tgz",    // traversal
		"/slugs/.incoming-x.tgz",              // temp files never served
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}
