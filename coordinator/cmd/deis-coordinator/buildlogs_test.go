package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

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
	mux.Handle("GET /builds/{formation}/{file}", buildLogHandler(dir, "tok"))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, tc := range []struct {
		path, auth string
		code       int
		body       string
	}{
		{"/builds/hello/b20240101120000000000-abc1234.log", "Bearer tok", http.StatusOK, "-----> Building\n"},
		{"/builds/hello/b20240101120000000000-abc1234.log", "", http.StatusUnauthorized, ""},
		{"/builds/hello/b20240101120000000000-abc1234.log", "Bearer nope", http.StatusUnauthorized, ""},
		{"/builds/hello/b1.log", "Bearer tok", http.StatusNotFound, ""},
		{"/builds/hello/B1.log", "Bearer tok", http.StatusBadRequest, ""},
		{"/builds/hello/b1.txt", "Bearer tok", http.StatusBadRequest, ""},
		{"/builds/hello/..%2Fsecret.log", "Bearer tok", http.StatusBadRequest, ""},
		{"/builds/Hello/b1.log", "Bearer tok", http.StatusBadRequest, ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("GET %s (%q): %s %q, want %d %q", tc.path, tc.auth, resp.Status, body, tc.code, tc.body)
		}
	}
}
