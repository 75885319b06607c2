package acme

import (
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

func TestDue(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := func(from, to time.Time, names ...string) *state.Cert {
		return &state.Cert{Domains: names, NotBefore: from, NotAfter: to}
	}
	day := 24 * time.Hour
	for _, c := range []struct {
		what string
		cur  *state.Cert
		want string // "" when not due
	}{
		{"no certificate", nil, "no automatic certificate yet"},
		{"fresh and covering", cert(now.Add(-day), now.Add(89*day), "a.example.com", "b.example.com"), ""},
		{"a domain was added", cert(now.Add(-day), now.Add(89*day), "a.example.com"), "domains not covered: b.example.com"},
		{"less than a third left", cert(now.Add(-61*day), now.Add(29*day), "a.example.com", "b.example.com"), "less than a third"},
		{"just over a third left", cert(now.Add(-59*day), now.Add(31*day), "a.example.com", "b.example.com"), ""},
	} {
		ok, why := due(c.cur, []string{"a.example.com", "b.example.com"}, now)
		if ok != (c.want != "") || !strings.Contains(why, c.want) {
			t.Errorf("%s: due = %v %q, want %q", c.what, ok, why, c.want)
		}
	}
}

func TestDomainsSkipWildcards(t *testing.T) {
	got := Domains(&state.Formation{Name: "web", Domains: []string{"*.example.com", "www.example.com"}}, "apps.test")
	if strings.Join(got, ",") != "web.apps.test,www.example.com" {
		t.Errorf("Domains = %v", got)
	}
}
