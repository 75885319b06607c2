package slugstore

import (
	"net/http"

	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/pki"
)

// RequirePlatform lets through only the platform's own callers: nodes,
// coordinators and root of the installation under prefix, as named by the
// client certificate a pki.ServerTLS listener has checked (the handshake
// already refused a missing, foreign, expired or revoked one). Others, users
// included, get 403; a request that did not come over TLS gets 403 too.
func RequirePlatform(prefix string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "slug server: plain HTTP is refused: serve it with pki.ServerTLS and fetch over https with a certificate of the platform CA", http.StatusForbidden)
			return
		}
		if id := access.Parse(prefix, pki.PeerIdentity(r)); !id.Platform() {
			http.Error(w, "slug server: "+id.String()+" may not fetch slugs: only nodes and coordinators may (their certificates from the platform CA)", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
