package proxy

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// applied is the routing databag of one formation that nginx serves, with
// the databag's ModRevision.
type applied struct {
	Revision int64         `json:"revision"`
	Routing  state.Routing `json:"routing"`
}

// routingAt is one routing databag as read, or why it could not be decoded.
type routingAt struct {
	Revision int64
	Doc      *state.Routing
	Err      error
}

// world is what one pass reads from etcd.
type world struct {
	Node     *state.Node
	Proxied  map[string]bool // formations with a proxy layer selecting the node
	Routings map[string]routingAt
	Acks     map[string]state.ProxyAck // this node's acks by formation
	// Certs and Challenges are each formation's certificates and ACME
	// HTTP-01 challenges (tls.go).
	Certs      map[string][]state.Cert
	Challenges map[string][]state.ACMEChallenge
}

// proxiedBy returns the formations whose proxy layer selects node. layers
// maps formation to its layers.
func proxiedBy(node *state.Node, layers map[string][]state.Layer) map[string]bool {
	out := map[string]bool{}
	for f, ls := range layers {
		for i := range ls {
			if ls[i].Type == state.LayerProxy && ls[i].Matches(node) {
				out[f] = true
			}
		}
	}
	return out
}

// choice is what the proxy wants nginx to serve.
type choice struct {
	Sites  []site
	Want   map[string]applied // per routed formation: the databag its site comes from
	Errors map[string]string  // per formation: why its newest databag is not (fully) served
	Acked  []string           // formations that get an ack: proxied and with a databag
}

// choose picks, for every proxied formation with a routing databag, the
// databag to serve: the newest if it is valid, else the one last applied.
// A domain claimed by two formations goes to the first by name.
func choose(w *world, last map[string]applied) choice {
	c := choice{Want: map[string]applied{}, Errors: map[string]string{}}
	var names []string
	for f := range w.Proxied {
		if _, ok := w.Routings[f]; ok {
			names = append(names, f)
		}
	}
	sort.Strings(names)
	c.Acked = names
	claimed := map[string]string{}
	for _, f := range names {
		r := w.Routings[f]
		err := r.Err
		var s site
		if err == nil {
			s, err = siteFor(f, r.Doc)
		}
		a := applied{Revision: r.Revision}
		if err == nil {
			a.Routing = *r.Doc
		} else {
			c.Errors[f] = fmt.Sprintf("routing revision %d refused: %v", r.Revision, err)
			prev, ok := last[f]
			if !ok {
				continue
			}
			if s, err = siteFor(f, &prev.Routing); err != nil {
				continue
			}
			a = prev
		}
		var keep, taken []string
		for _, d := range s.Domains {
			if other, ok := claimed[d]; ok {
				taken = append(taken, d+" (served for "+other+")")
				continue
			}
			claimed[d] = f
			keep = append(keep, d)
		}
		if len(taken) > 0 {
			msg := "domains claimed by another formation are not routed here: " + strings.Join(taken, ", ")
			if c.Errors[f] != "" {
				msg = c.Errors[f] + "; " + msg
			}
			c.Errors[f] = msg
		}
		if len(keep) == 0 {
			continue
		}
		s.Domains = keep
		c.Sites = append(c.Sites, s)
		c.Want[f] = a
	}
	return c
}

// ackFor is the ack a formation should carry: the revision nginx serves for
// it, and why a newer one is not served.
func ackFor(node, f string, c choice, live map[string]applied, applyErr error) state.ProxyAck {
	ack := state.ProxyAck{Node: node, Revision: live[f].Revision, Error: c.Errors[f]}
	if applyErr != nil && c.Want[f].Revision != live[f].Revision {
		if ack.Error != "" {
			ack.Error += "; "
		}
		ack.Error += applyErr.Error()
	}
	return ack
}

// action is how nginx is brought to a config.
type action int

const (
	actNone   action = iota
	actReload        // SIGHUP the running master
	actStart         // start a new master
)

func (a action) String() string {
	return [...]string{"none", "reload", "start"}[a]
}

// step is the one thing a pass does to nginx, with the reason.
type step struct {
	Write  bool // stage, check and install the new config file first
	Action action
	Reason string
}

// planNginx decides how to make nginx serve want. onDisk is the installed
// config file, running whether a master of this prefix is alive, liveHash
// what its control server answers ("" when it does not).
func planNginx(want []byte, wantHash string, onDisk []byte, running bool, liveHash string) step {
	if running && liveHash == wantHash {
		return step{Action: actNone, Reason: "nginx already serves this config"}
	}
	write := !bytes.Equal(onDisk, want)
	switch {
	case !running && write:
		return step{Write: true, Action: actStart, Reason: "nginx is not running and the config changed"}
	case !running:
		return step{Action: actStart, Reason: "nginx is not running"}
	case write:
		return step{Write: true, Action: actReload, Reason: "the config changed"}
	case liveHash == "":
		return step{Action: actReload, Reason: "nginx does not answer on its control socket"}
	default:
		return step{Action: actReload, Reason: "nginx serves an older config than the installed file"}
	}
}
