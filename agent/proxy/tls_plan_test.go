package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/certtest"
)

// pickCerts serves, per domain, the covering certificate of the formation
// that expires last, and skips broken and expired ones.
func TestPickCerts(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	now := time.Now()
	mk := func(name string, until time.Duration, names ...string) state.Cert {
		chain, key := ca.Issue(t, names, now.Add(-time.Hour), now.Add(until))
		c, err := state.ParseCert(chain, key, now)
		if err != nil {
			t.Fatal(err)
		}
		c.Name = name
		return *c
	}
	short := mk("short", time.Hour, "www.example.com")
	long := mk("long", 48*time.Hour, "www.example.com", "*.apps.example.com")
	broken := mk("broken", 72*time.Hour, "www.example.com")
	broken.KeyPEM = short.KeyPEM // not its key
	other := mk("other", 72*time.Hour, "www.example.com")
	sites := []site{{Formation: "web", Domains: []string{"a.apps.example.com", "web.localhost", "www.example.com"}}}
	certs := map[string][]state.Cert{"web": {short, long, broken}, "elsewhere": {other}}

	used, sni, skipped := pickCerts(sites, certs, now)
	if len(used) != 1 || sni["www.example.com"] != long.Fingerprint[:24] || sni["a.apps.example.com"] != long.Fingerprint[:24] {
		t.Errorf("sni = %v, want the long certificate for both names", sni)
	}
	if _, ok := sni["web.localhost"]; ok {
		t.Error("a name no certificate covers got one")
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0], "web/broken") {
		t.Errorf("skipped = %v", skipped)
	}
	// Later, the long one expired... and a day after, both.
	_, sni, _ = pickCerts(sites, map[string][]state.Cert{"web": {short}}, now)
	if sni["www.example.com"] != short.Fingerprint[:24] {
		t.Errorf("sni = %v, want the short certificate", sni)
	}
	if _, sni, skipped = pickCerts(sites, certs, now.Add(96*time.Hour)); len(sni) != 0 || len(skipped) != 3 {
		t.Errorf("expired certificates served: %v (skipped %v)", sni, skipped)
	}
	text, v := renderCerts(used, sni)
	if !strings.HasPrefix(string(text), "version "+v+"\n") {
		t.Errorf("certs text: %s", text)
	}
}
