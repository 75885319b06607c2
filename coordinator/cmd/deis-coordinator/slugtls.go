package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/pki"
)

// slugCerts are the coordinator's certificates for the slug server (and
// build logs) and for fetching slugs from the other coordinators.
type slugCerts struct {
	server *tls.Config // pki.ServerTLS: a client certificate of the CA required
	client *tls.Config // pki.ClientTLS as the coordinator
}

// newSlugCerts issues, from the platform CA, a server certificate for the
// slug URL's host (and this machine's names) and a client certificate of
// the coordinator's identity. They are made afresh at each start and kept
// in memory only. The server refuses certificates in revoked (kept in step
// with the revocation records: a removed node fetches no slug).
func newSlugCerts(ca *pki.CA, revoked *pki.Revoked, slugURL, prefix string) (*slugCerts, error) {
	u, err := url.Parse(slugURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("--slug-url %q: give an https:// URL (the slug server requires TLS with client certificates)", slugURL)
	}
	hosts := []string{u.Hostname(), "127.0.0.1", "localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	who := etcdauth.NewNames(prefix).Coordinator()
	srv, err := ca.IssueServer(who, hosts, 0)
	if err != nil {
		return nil, fmt.Errorf("slug server: issue its certificate: %w", err)
	}
	cl, err := ca.IssueClient(who, 0)
	if err != nil {
		return nil, fmt.Errorf("slug server: issue the coordinator's client certificate: %w", err)
	}
	v := &pki.Verifier{CA: ca, Revoked: revoked}
	return &slugCerts{server: pki.ServerTLS(v, srv), client: pki.ClientTLS(v, cl)}, nil
}

// plainHandler answers plain HTTP on the slug server's port: /metrics and
// /healthz stay open; slugs and build logs are refused with the fix.
func plainHandler(open http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", open)
	mux.Handle("/healthz", open)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "slug server: plain HTTP is refused: use https:// with a certificate of the platform CA (nodes and coordinators for slugs; deisctl's credentials for build logs)", http.StatusForbidden)
	})
	return mux
}
