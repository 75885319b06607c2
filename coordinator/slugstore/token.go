package slugstore

import (
	"crypto/subtle"
	"net/http"
)

// RequireToken lets through only requests that carry
// "Authorization: Bearer <token>"; others get 401.
func RequireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="deis slugs"`)
			http.Error(w, "slug server: missing or wrong token: agents send the platform token (etcd, Keys.PlatformToken) as Authorization: Bearer TOKEN", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
