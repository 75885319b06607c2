package main

import (
	"crypto/subtle"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// buildLogHandler serves GET /builds/<formation>/<build id>.log: the
// builder's log of one build (DataDir/builds/<formation>/<id>.log), for
// deisctl logs. It requires the platform token as a bearer token.
func buildLogHandler(dataDir, token string) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="deis builds"`)
			http.Error(w, "build logs: missing or wrong platform token: deisctl reads it from etcd", http.StatusUnauthorized)
			return
		}
		f := r.PathValue("formation")
		id, ok := strings.CutSuffix(r.PathValue("file"), ".log")
		if !ok || state.ValidateName("formation", f) != nil || state.ValidateName("build", id) != nil {
			http.Error(w, "build logs: use /builds/FORMATION/BUILD-ID.log with names of lowercase letters, digits and hyphens", http.StatusBadRequest)
			return
		}
		file, err := os.Open(filepath.Join(dataDir, "builds", f, id+".log"))
		if errors.Is(err, fs.ErrNotExist) {
			http.Error(w, "build logs: no log of build "+id+" of "+f, http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, "build logs: "+err.Error(), http.StatusInternalServerError)
			return
		}
		defer file.Close()
		st, err := file.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.Error(w, "build logs: no log of build "+id+" of "+f, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		http.ServeContent(w, r, "", st.ModTime(), file)
	})
}
