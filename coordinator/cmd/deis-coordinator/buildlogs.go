package main

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
)

// buildLogHandler serves GET /builds/<formation>/<build id>.log: the
// builder's log of one build (DataDir/builds/<formation>/<id>.log), for
// deisctl logs. It is served over TLS with client certificates (the slug
// server's listener); the caller must be allowed the formation
// (access.Formation: administrators, coordinators, users granted it),
// as the records of the installation under prefix say.
func buildLogHandler(dataDir, prefix string, records access.Records) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := r.PathValue("formation")
		id, ok := strings.CutSuffix(r.PathValue("file"), ".log")
		if !ok || state.ValidateName("formation", f) != nil || state.ValidateName("build", id) != nil {
			http.Error(w, "build logs: use /builds/FORMATION/BUILD-ID.log with names of lowercase letters, digits and hyphens", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		err := access.Formation(ctx, records, access.Parse(prefix, pki.PeerIdentity(r)), f)
		cancel()
		switch {
		case access.IsDenied(err):
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		case err != nil:
			http.Error(w, "build logs: "+err.Error(), http.StatusServiceUnavailable)
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
