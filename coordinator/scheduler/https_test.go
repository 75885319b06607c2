package scheduler

import (
	"testing"

	"github.com/deis/deis/pkg/state"
)

// The formation's redirect and HSTS reach the routing databag (not its
// auto flag), without replacing containers.
func TestPlanRoutingCarriesHTTPS(t *testing.T) {
	w := world("n1")
	w.Releases["hello"] = release(1)
	d := Plan(w)
	apply(w, d, 10)
	ready(w)
	d = Plan(w)
	apply(w, d, 11)
	if d.Routing["hello"].HTTPS != nil {
		t.Fatalf("routing HTTPS %+v without settings", d.Routing["hello"].HTTPS)
	}
	for _, tc := range []struct {
		set  *state.HTTPS
		want *state.HTTPS
	}{
		{&state.HTTPS{Redirect: true}, &state.HTTPS{Redirect: true}},               // certs:redirect on
		{&state.HTTPS{HSTSMaxAge: 600, Auto: true}, &state.HTTPS{HSTSMaxAge: 600}}, // auto stays with the coordinator
		{&state.HTTPS{Auto: true}, nil},                                            // auto alone: nothing for the proxies
		{nil, nil},                                                                 // none
	} {
		w.Formations["hello"].HTTPS = tc.set
		d = Plan(w)
		got := d.Routing["hello"].HTTPS
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("formation HTTPS %+v: routing has %+v, want %+v", tc.set, got, tc.want)
		}
		if len(d.Routing["hello"].Upstreams) != 1 {
			t.Errorf("routing lost its upstream: %+v", d.Routing["hello"])
		}
	}
}
