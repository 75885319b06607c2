package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
)

func routing(f string, domains []string, addrs ...string) *state.Routing {
	r := &state.Routing{Formation: f, Domains: domains, Upstreams: []state.Upstream{}}
	for i, a := range addrs {
		r.Upstreams = append(r.Upstreams, state.Upstream{Container: f + ".v1.web." + string(rune('1'+i)), Addr: a})
	}
	return r
}

func TestProxiedBy(t *testing.T) {
	node := &state.Node{Name: "n1", Labels: map[string]string{"role": "runtime,proxy", "zone": "a"}}
	layers := map[string][]state.Layer{
		// a proxy layer selecting one of the node's role values
		"web": {{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}}},
		// a runtime layer selecting the node does not make it a proxy
		"api": {{Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}},
		// a proxy layer selecting another zone
		"eu": {{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy", "zone": "b"}}},
		// one matching proxy layer among others is enough
		"mix": {{Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}, {Type: state.LayerProxy, Selector: map[string]string{"zone": "a"}}},
	}
	got := proxiedBy(node, layers)
	if len(got) != 2 || !got["web"] || !got["mix"] {
		t.Errorf("proxied = %v, want web and mix", got)
	}
}

func TestChoose(t *testing.T) {
	goodA := routing("a", []string{"a.example.com"}, "10.0.0.1:5000")
	lastA := map[string]applied{"a": {Revision: 5, Routing: *routing("a", []string{"a.example.com"}, "10.0.0.9:5000")}}
	for _, tc := range []struct {
		name      string
		proxied   []string
		routings  map[string]routingAt
		last      map[string]applied
		wantSites []string          // formation:domains:upstreams
		wantRev   map[string]int64  // Want revisions
		wantErr   map[string]string // substring of Errors
		wantAcked []string
	}{{
		name:      "a valid databag is served at its revision",
		proxied:   []string{"a"},
		routings:  map[string]routingAt{"a": {Revision: 7, Doc: goodA}},
		wantSites: []string{"a:a.example.com:10.0.0.1:5000"},
		wantRev:   map[string]int64{"a": 7},
		wantAcked: []string{"a"},
	}, {
		name:      "a databag of a formation not proxied here is ignored",
		proxied:   nil,
		routings:  map[string]routingAt{"a": {Revision: 7, Doc: goodA}},
		wantRev:   map[string]int64{},
		wantAcked: nil,
	}, {
		name:      "a proxied formation without databag gets nothing, not even an ack",
		proxied:   []string{"a"},
		routings:  map[string]routingAt{},
		wantRev:   map[string]int64{},
		wantAcked: nil,
	}, {
		name:      "an injected domain keeps the routing last applied",
		proxied:   []string{"a"},
		routings:  map[string]routingAt{"a": {Revision: 8, Doc: routing("a", []string{"a.com; include /etc/passwd"}, "10.0.0.1:5000")}},
		last:      lastA,
		wantSites: []string{"a:a.example.com:10.0.0.9:5000"},
		wantRev:   map[string]int64{"a": 5},
		wantErr:   map[string]string{"a": "routing revision 8 refused: invalid domain"},
		wantAcked: []string{"a"},
	}, {
		name:      "an undecodable databag keeps the routing last applied",
		proxied:   []string{"a"},
		routings:  map[string]routingAt{"a": {Revision: 8, Err: errors.New("cannot decode")}},
		last:      lastA,
		wantSites: []string{"a:a.example.com:10.0.0.9:5000"},
		wantRev:   map[string]int64{"a": 5},
		wantErr:   map[string]string{"a": "cannot decode"},
		wantAcked: []string{"a"},
	}, {
		name:      "an invalid databag with nothing applied before is left out",
		proxied:   []string{"a"},
		routings:  map[string]routingAt{"a": {Revision: 8, Doc: routing("a", []string{"x{"})}},
		wantRev:   map[string]int64{},
		wantErr:   map[string]string{"a": "invalid domain"},
		wantAcked: []string{"a"},
	}, {
		name:    "a domain claimed twice goes to the first formation by name",
		proxied: []string{"a", "b"},
		routings: map[string]routingAt{
			"a": {Revision: 3, Doc: routing("a", []string{"shared.com", "a.com"})},
			"b": {Revision: 4, Doc: routing("b", []string{"shared.com", "b.com"})},
		},
		wantSites: []string{"a:a.com shared.com:", "b:b.com:"},
		wantRev:   map[string]int64{"a": 3, "b": 4},
		wantErr:   map[string]string{"b": "shared.com (served for a)"},
		wantAcked: []string{"a", "b"},
	}, {
		name:      "no upstreams is a site without upstreams",
		proxied:   []string{"a"},
		routings:  map[string]routingAt{"a": {Revision: 2, Doc: routing("a", []string{"a.com"})}},
		wantSites: []string{"a:a.com:"},
		wantRev:   map[string]int64{"a": 2},
		wantAcked: []string{"a"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := &world{Proxied: map[string]bool{}, Routings: tc.routings}
			for _, f := range tc.proxied {
				w.Proxied[f] = true
			}
			c := choose(w, tc.last)
			var sites []string
			for _, s := range c.Sites {
				sites = append(sites, s.Formation+":"+strings.Join(s.Domains, " ")+":"+strings.Join(s.Upstreams, " "))
			}
			if strings.Join(sites, "|") != strings.Join(tc.wantSites, "|") {
				t.Errorf("sites = %q, want %q", sites, tc.wantSites)
			}
			if len(c.Want) != len(tc.wantRev) {
				t.Errorf("want = %v, want revisions %v", c.Want, tc.wantRev)
			}
			for f, rev := range tc.wantRev {
				if c.Want[f].Revision != rev {
					t.Errorf("revision of %s = %d, want %d", f, c.Want[f].Revision, rev)
				}
			}
			if len(c.Errors) != len(tc.wantErr) {
				t.Errorf("errors = %v, want %v", c.Errors, tc.wantErr)
			}
			for f, e := range tc.wantErr {
				if !strings.Contains(c.Errors[f], e) {
					t.Errorf("error of %s = %q, want it to contain %q", f, c.Errors[f], e)
				}
			}
			if strings.Join(c.Acked, ",") != strings.Join(tc.wantAcked, ",") {
				t.Errorf("acked = %v, want %v", c.Acked, tc.wantAcked)
			}
		})
	}
}

func TestAckFor(t *testing.T) {
	c := choice{Want: map[string]applied{"a": {Revision: 9}, "b": {Revision: 4}, "c": {Revision: 3}}, Errors: map[string]string{"c": "routing revision 6 refused"}}
	live := map[string]applied{"a": {Revision: 9}, "b": {Revision: 2}, "c": {Revision: 3}}
	check := errors.New("nginx rejected the new config")
	for _, tc := range []struct {
		name    string
		f       string
		err     error
		wantRev int64
		wantErr string
	}{
		// served as wanted: the revision, no error
		{"up to date", "a", nil, 9, ""},
		// a rejected config does not concern a formation whose routing did not move
		{"up to date while another failed", "a", check, 9, ""},
		// a formation that could not move keeps its old revision, with the reason
		{"held back by a rejected config", "b", check, 2, "nginx rejected the new config"},
		// a refused databag keeps the revision served and says why
		{"refused databag", "c", nil, 3, "routing revision 6 refused"},
		// a formation never served acks revision 0
		{"never served", "d", check, 0, ""},
	} {
		got := ackFor("n1", tc.f, c, live, tc.err)
		if got.Node != "n1" || got.Revision != tc.wantRev || got.Error != tc.wantErr {
			t.Errorf("%s: ack = %+v, want revision %d error %q", tc.name, got, tc.wantRev, tc.wantErr)
		}
	}
}

func TestPlanNginx(t *testing.T) {
	want, old := []byte("new"), []byte("old")
	for _, tc := range []struct {
		name    string
		onDisk  []byte
		running bool
		live    string
		want    step
	}{
		// nginx answers the wanted hash: nothing to do, even if the file differs
		{"serving", want, true, "H", step{Action: actNone}},
		// a changed routing: install and reload
		{"changed", old, true, "OLD", step{Write: true, Action: actReload}},
		// the file is current but the master still runs an older one
		{"stale master", want, true, "OLD", step{Action: actReload}},
		// an adopted master without a control server
		{"no control", want, true, "", step{Action: actReload}},
		// nothing runs: start from the installed file
		{"stopped", want, false, "", step{Action: actStart}},
		// nothing runs and the file is old: install and start
		{"first start", nil, false, "", step{Write: true, Action: actStart}},
	} {
		got := planNginx(want, "H", tc.onDisk, tc.running, tc.live)
		if got.Write != tc.want.Write || got.Action != tc.want.Action || got.Reason == "" {
			t.Errorf("%s: got %+v, want write=%v action=%v with a reason", tc.name, got, tc.want.Write, tc.want.Action)
		}
	}
}
