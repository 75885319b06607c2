package state

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Cert is one TLS certificate of a formation, stored at Keys.Cert. It is
// written by deisctl certs:add (Auto false) or by the leading
// coordinator's ACME client (Auto true), and read by the proxies, which
// serve it by SNI for the formation's domains that it covers.
//
// KeyPEM is the private key: anyone who may read the certs family in
// etcd (operators, coordinators, proxy agents) may read it; see
// docs/security.md.
type Cert struct {
	Name      string `json:"name"`
	Formation string `json:"formation"`
	// CertPEM is the chain, leaf first; KeyPEM the leaf's private key.
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
	// Domains are the leaf's DNS names (SANs), sorted.
	Domains   []string  `json:"domains"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// Fingerprint is the sha256 of the leaf's DER, in hex.
	Fingerprint string `json:"fingerprint"`
	// Auto marks a certificate issued over ACME (deisctl certs:auto); the
	// coordinator renews and replaces only those.
	Auto  bool      `json:"auto,omitempty"`
	Added time.Time `json:"added"`
}

// HTTPS is a formation's HTTPS settings (Formation.HTTPS), which the
// scheduler copies into its routing databag.
type HTTPS struct {
	// Redirect answers plain HTTP requests with 308 to the same URL over
	// HTTPS (ACME challenges excepted).
	Redirect bool `json:"redirect,omitempty"`
	// HSTSMaxAge, when positive, adds Strict-Transport-Security with this
	// max-age (seconds) to every HTTPS response.
	HSTSMaxAge int64 `json:"hstsMaxAge,omitempty"`
	// Auto asks the leading coordinator to obtain and renew certificates
	// over ACME for the formation's domains.
	Auto bool `json:"auto,omitempty"`
}

// AutoCertName is the name of a formation's automatic (ACME) certificate.
const AutoCertName = "auto"

// MaxHSTSMaxAge is the largest HSTS max-age accepted: two years.
const MaxHSTSMaxAge = 2 * 365 * 24 * 3600

// AllCerts is the family of every formation's certificates (writers:
// deisctl, the leading coordinator's ACME client; readers: proxy agents).
func (k Keys) AllCerts() string           { return k.join("certs") + "/" }
func (k Keys) Certs(f string) string      { return k.join("certs", f) + "/" }
func (k Keys) Cert(f, name string) string { return k.join("certs", f, name) }

// AllACMEChallenges holds the HTTP-01 challenges the proxies answer at
// /.well-known/acme-challenge/<token> for a formation's domains (writer:
// the leading coordinator; watched by proxy agents).
func (k Keys) AllACMEChallenges() string          { return k.join("acme", "challenges") + "/" }
func (k Keys) ACMEChallenges(f string) string     { return k.join("acme", "challenges", f) + "/" }
func (k Keys) ACMEChallenge(f, tok string) string { return k.join("acme", "challenges", f, tok) }

// ACMEStatus is the leading coordinator's account of a formation's
// automatic certificate: the last order's error and when it retries
// (writer: the leading coordinator; reader: deisctl certs).
func (k Keys) ACMEStatus(f string) string { return k.join("status", "acme", f) }

// ACMEStatus says how the last certificate order of a formation went.
type ACMEStatus struct {
	// Error is why the last order failed; "" when it succeeded.
	Error string    `json:"error,omitempty"`
	Retry time.Time `json:"retry,omitempty"`
	At    time.Time `json:"at"`
}

// ACMEAccount is the coordinators' ACME account key and URL (writer: the
// leading coordinator).
func (k Keys) ACMEAccount() string { return k.join("acme", "account") }

// ACMEChallenge is one HTTP-01 challenge a proxy answers: GET
// /.well-known/acme-challenge/Token on Domain gets KeyAuth.
type ACMEChallenge struct {
	Domain  string `json:"domain"`
	Token   string `json:"token"`
	KeyAuth string `json:"keyAuth"`
}

// ValidateCertName checks a certificate's name: a DNS label or a domain
// without wildcards (the name certs:add derives from the leaf).
func ValidateCertName(n string) error {
	if strings.Contains(n, "*") || ValidateDomain(n) != nil || strings.HasPrefix(n, ".") {
		return fmt.Errorf("invalid certificate name %q: use lowercase letters, digits, dots and hyphens, like www.example.com", n)
	}
	return nil
}

// ValidateACMEToken checks an ACME token: base64url characters only, so it
// is safe in a key, a path and the routes text.
func ValidateACMEToken(t string) error {
	if len(t) == 0 || len(t) > 128 {
		return fmt.Errorf("invalid ACME token of %d characters", len(t))
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("invalid ACME token %q: only base64url characters", t)
		}
	}
	return nil
}

// ParseCert checks a PEM certificate chain (leaf first) and its private
// key at time now: both parse, the key is the leaf's, the leaf is valid
// now and names at least one DNS name. It returns the Cert (Name, Formation,
// Auto and Added unset) with the chain re-encoded: only CERTIFICATE blocks,
// and the key as one PKCS#8 block.
func ParseCert(chainPEM, keyPEM []byte, now time.Time) (*Cert, error) {
	var chain []*x509.Certificate
	var out bytes.Buffer
	rest := chainPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if strings.Contains(b.Type, "PRIVATE KEY") {
				return nil, errors.New("the certificate file holds a private key: pass the certificate (chain) first and the key second")
			}
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the chain does not parse: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM certificate found in the certificate file: pass a PEM file that begins with -----BEGIN CERTIFICATE-----")
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("the private key does not belong to the certificate: pass the key the certificate was issued for")
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate expired on %s: renew it and add the new one", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	var names []string
	for _, d := range leaf.DNSNames {
		d = strings.ToLower(d)
		if ValidateDomain(d) == nil {
			names = append(names, d)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("the certificate names no DNS name (subjectAltName): the proxies select certificates by the names in it")
	}
	sort.Strings(names)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("cannot re-encode the private key: %w", err)
	}
	sum := sha256.Sum256(leaf.Raw)
	return &Cert{
		CertPEM:     out.String(),
		KeyPEM:      string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Domains:     compactStrings(names),
		Issuer:      leaf.Issuer.String(),
		NotBefore:   leaf.NotBefore.UTC(),
		NotAfter:    leaf.NotAfter.UTC(),
		Fingerprint: hex.EncodeToString(sum[:]),
	}, nil
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// parseKey reads the first private key block of keyPEM (PKCS#1, PKCS#8 or
// SEC 1).
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key found in the key file: pass a file that begins with -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY)")
		}
		if strings.Contains(b.Type, "ENCRYPTED") {
			return nil, errors.New("the private key is encrypted: decrypt it first (openssl pkey -in KEY -out KEY.plain)")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "CERTIFICATE":
			return nil, errors.New("the key file holds a certificate: pass the certificate first and the private key second")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("the private key does not parse: %w", err)
		}
		switch s := k.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return s.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("unsupported private key type %T: use RSA or ECDSA", k)
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// CertCovers reports whether a certificate name (possibly a wildcard
// *.example.com, which covers exactly one label) covers domain d (which
// may itself be a wildcard, covered only by the same wildcard).
func CertCovers(name, d string) bool {
	if name == d {
		return true
	}
	if strings.HasPrefix(d, "*.") {
		return false
	}
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		i := strings.IndexByte(d, '.')
		return i > 0 && d[i+1:] == rest
	}
	return false
}

// Coverage splits domains into those some name of names covers and the rest.
func Coverage(names, domains []string) (covered, not []string) {
	for _, d := range domains {
		ok := false
		for _, n := range names {
			if CertCovers(n, d) {
				ok = true
				break
			}
		}
		if ok {
			covered = append(covered, d)
		} else {
			not = append(not, d)
		}
	}
	return covered, not
}

// DefaultCertName is the name certs:add gives a certificate: its first
// DNS name, a wildcard's "*" written "wildcard".
func DefaultCertName(c *Cert) string {
	if len(c.Domains) == 0 {
		return ""
	}
	return strings.Replace(c.Domains[0], "*", "wildcard", 1)
}
