package proxy

// HTTPS: certificates served by SNI without a reload, the default
// certificate, redirect and HSTS, and ACME HTTP-01 answers.
//
// Certificates and keys reach nginx as the certs text, PUT on the control
// socket into the shared dict deis_certs (memory only) and kept in
// <prefix>/certs.txt (0600, root, in the 0700 prefix) for the master to
// load when nginx starts. Workers never read a key file.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
)

func (l layout) certsTable() string  { return filepath.Join(l.Prefix, "certs.txt") }
func (l layout) defaultCert() string { return filepath.Join(l.Prefix, "default.crt") }
func (l layout) defaultKey() string  { return filepath.Join(l.Prefix, "default.key") }

// ensureDefaultCert makes the self-signed certificate served for names no
// formation has a certificate for, once: it is kept in the private prefix.
func ensureDefaultCert(paths layout) error {
	if _, err := os.Stat(paths.defaultKey()); err == nil {
		if _, err := os.Stat(paths.defaultCert()); err == nil {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("proxy: default certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return fmt.Errorf("proxy: default certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "deis default certificate", Organization: []string{"deis"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("proxy: default certificate: %w", err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("proxy: default certificate: %w", err)
	}
	if err := writePrivate(paths.defaultKey(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})); err != nil {
		return err
	}
	return writePrivate(paths.defaultCert(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// writePrivate writes b to path through a 0600 temp file and a rename.
func writePrivate(path string, b []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	_, err = fh.Write(b)
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	return nil
}

// keyAuth is what an ACME key authorization may hold (token "." thumbprint,
// both base64url).
var keyAuth = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}\.[A-Za-z0-9_-]{1,128}$`)

// httpsFor copies the HTTPS settings of a routing databag into s.
func httpsFor(s *site, r *state.Routing) error {
	if r.HTTPS == nil {
		return nil
	}
	if r.HTTPS.HSTSMaxAge < 0 || r.HTTPS.HSTSMaxAge > state.MaxHSTSMaxAge {
		return fmt.Errorf("HSTS max-age %d is out of range", r.HTTPS.HSTSMaxAge)
	}
	s.Redirect, s.HSTS = r.HTTPS.Redirect, r.HTTPS.HSTSMaxAge
	return nil
}

// renderHTTPS writes the routes lines of the HTTPS settings and the ACME
// challenges of sites.
func renderHTTPS(b *strings.Builder, sites []site) {
	for _, s := range sites {
		if s.Redirect || s.HSTS > 0 {
			r := "0"
			if s.Redirect {
				r = "1"
			}
			b.WriteString("https " + s.Formation + " " + r + " " + strconv.FormatInt(s.HSTS, 10) + "\n")
		}
	}
	for _, s := range sites {
		for _, c := range s.Challenges {
			b.WriteString("acme " + s.Formation + " " + c[0] + " " + c[1] + "\n")
		}
	}
}

// challengesFor returns formation f's valid ACME challenges, sorted by token.
func challengesFor(list []state.ACMEChallenge) [][2]string {
	var out [][2]string
	for _, c := range list {
		if state.ValidateACMEToken(c.Token) != nil || !keyAuth.MatchString(c.KeyAuth) || !strings.HasPrefix(c.KeyAuth, c.Token+".") {
			continue
		}
		out = append(out, [2]string{c.Token, c.KeyAuth})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// pickCerts chooses, for each domain of sites, the certificate of its
// formation that covers it and expires last, among those valid at now
// (re-checked here: a databag in etcd is not trusted to be well-formed). It
// returns the certificates used by id and the id per domain, and why some
// certificates were skipped.
func pickCerts(sites []site, certs map[string][]state.Cert, now time.Time) (used map[string]*state.Cert, sni map[string]string, skipped []string) {
	used, sni = map[string]*state.Cert{}, map[string]string{}
	for _, s := range sites {
		var good []*state.Cert
		for i := range certs[s.Formation] {
			c := &certs[s.Formation][i]
			p, err := state.ParseCert([]byte(c.CertPEM), []byte(c.KeyPEM), now)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%s/%s: %v", s.Formation, c.Name, err))
				continue
			}
			good = append(good, p)
		}
		sort.Slice(good, func(i, j int) bool {
			if !good[i].NotAfter.Equal(good[j].NotAfter) {
				return good[i].NotAfter.After(good[j].NotAfter)
			}
			return good[i].Fingerprint < good[j].Fingerprint
		})
		for _, d := range s.Domains {
			for _, c := range good {
				if cov, _ := state.Coverage(c.Domains, []string{d}); len(cov) == 1 {
					id := c.Fingerprint[:24]
					used[id] = c
					sni[d] = id
					break
				}
			}
		}
	}
	return used, sni, skipped
}

// renderCerts writes the certs text: a version, each certificate used
// (chain and key in base64), and the certificate of each domain.
func renderCerts(used map[string]*state.Cert, sni map[string]string) ([]byte, string) {
	var b strings.Builder
	ids := make([]string, 0, len(used))
	for id := range used {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := used[id]
		b.WriteString("cert " + id + " " + base64.StdEncoding.EncodeToString([]byte(c.CertPEM)) + " " +
			base64.StdEncoding.EncodeToString([]byte(c.KeyPEM)) + "\n")
	}
	doms := make([]string, 0, len(sni))
	for d := range sni {
		doms = append(doms, d)
	}
	sort.Strings(doms)
	for _, d := range doms {
		b.WriteString("sni " + d + " " + sni[d] + "\n")
	}
	sum := sha256.Sum256([]byte(b.String()))
	version := hex.EncodeToString(sum[:])
	return []byte("version " + version + "\n" + b.String()), version
}

// httpsPort is the port of the first HTTPS listen spec, or 0.
func httpsPort(listen []string) int {
	if len(listen) == 0 {
		return 0
	}
	l := listen[0]
	if i := strings.LastIndexByte(l, ':'); i >= 0 {
		l = l[i+1:]
	}
	n, _ := strconv.Atoi(l)
	return n
}

// applyCerts makes the running nginx serve the certs text, without a
// reload; the file comes first, so a restarted nginx serves it too.
func (p *Proxy) applyCerts(ctx context.Context, text []byte, version string) error {
	if old, err := os.ReadFile(p.paths.certsTable()); err != nil || string(old) != string(text) {
		if err := writePrivate(p.paths.certsTable(), text); err != nil {
			return err
		}
	}
	code, live, err := p.ngx.call(ctx, http.MethodGet, "/certs", nil)
	if err != nil {
		return fmt.Errorf("proxy: ask nginx for its certificates: %w; see %s", err, p.paths.errorLog())
	}
	if code == http.StatusOK && live == version {
		return nil
	}
	p.m.certUpdates.Inc()
	code, body, err := p.ngx.call(ctx, http.MethodPut, "/certs", text)
	if err != nil {
		p.m.certFailures.Inc()
		return fmt.Errorf("proxy: push certificates to nginx: %w; see %s", err, p.paths.errorLog())
	}
	if code != http.StatusOK || body != version {
		p.m.certFailures.Inc()
		return fmt.Errorf("proxy: nginx refused the certificates (%d %q); see %s", code, clip([]byte(body), nil), p.paths.errorLog())
	}
	p.log.Info("nginx serves the new certificates", "node", p.cfg.Node, "version", version[:12], "certificates", strings.Count(string(text), "\ncert "))
	return nil
}

// renderTLS writes the HTTPS directives of the app server: the TLS
// listeners, the default certificate (read by the master, as root), and
// the Lua that picks a formation's certificate by SNI and adds HSTS.
func renderTLS(w func(string, ...any), in renderInput) {
	if len(in.HTTPSListen) == 0 {
		return
	}
	for _, l := range in.HTTPSListen {
		w("        listen %s ssl default_server;", l)
	}
	w("        ssl_protocols TLSv1.2 TLSv1.3;")
	w("        ssl_session_cache shared:deis_ssl:10m;")
	w("        ssl_session_timeout 1h;")
	w("        # Served for names without a certificate of their own.")
	w("        ssl_certificate %q;", in.Paths.defaultCert())
	w("        ssl_certificate_key %q;", in.Paths.defaultKey())
	w("        ssl_certificate_by_lua_block {")
	w("            require(\"deis\").ssl_certificate()")
	w("        }")
	w("        header_filter_by_lua_block {")
	w("            require(\"deis\").https_headers()")
	w("        }")
}
