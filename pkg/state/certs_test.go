package state

import (
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/testing/certtest"
)

func TestCertCovers(t *testing.T) {
	for _, c := range []struct {
		name, domain string
		want         bool
	}{
		{"www.example.com", "www.example.com", true},
		{"*.example.com", "www.example.com", true},
		{"*.example.com", "a.b.example.com", false}, // a wildcard covers one label
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.example.com", true},
		{"www.example.com", "*.example.com", false}, // a wildcard domain needs a wildcard certificate
		{"example.com", "www.example.com", false},
	} {
		if got := CertCovers(c.name, c.domain); got != c.want {
			t.Errorf("CertCovers(%q, %q) = %v, want %v", c.name, c.domain, got, c.want)
		}
	}
}

func TestParseCert(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	now := time.Now()
	chain, key := ca.Issue(t, []string{"WWW.example.com", "*.example.com"}, now.Add(-time.Hour), now.Add(time.Hour))
	c, err := ParseCert(chain, key, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Domains, ",") != "*.example.com,www.example.com" || strings.Count(c.CertPEM, "BEGIN CERTIFICATE") != 2 ||
		!strings.HasPrefix(c.KeyPEM, "-----BEGIN PRIVATE KEY-----") || len(c.Fingerprint) != 64 {
		t.Fatalf("ParseCert = %+v", c)
	}
	if DefaultCertName(c) != "wildcard.example.com" {
		t.Errorf("DefaultCertName = %q", DefaultCertName(c))
	}
	_, otherKey := ca.Issue(t, []string{"x.example.com"}, now.Add(-time.Hour), now.Add(time.Hour))
	for _, bad := range []struct {
		chain, key []byte
		at         time.Time
		want       string
	}{
		{chain, otherKey, now, "does not belong to the certificate"},
		{chain, key, now.Add(2 * time.Hour), "the certificate expired on"},
		{chain, key, now.Add(-2 * time.Hour), "not valid before"},
		{key, chain, now, "holds a private key"},
		{chain, []byte("x"), now, "no PEM private key"},
		{[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key, now, "does not parse"},
	} {
		if _, err := ParseCert(bad.chain, bad.key, bad.at); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseCert: %v, want %q", err, bad.want)
		}
	}
}
