package view

import (
	"fmt"
	"strconv"

	"github.com/deis/deis/pkg/state"
)

// Family names one key family a View keeps.
type Family string

// The families a View can keep. DefaultFamilies lists those kept when
// Options.Families is nil.
const (
	Formations      Family = "formations"
	Layers          Family = "layers"
	Configs         Family = "configs"
	Releases        Family = "releases"
	ReleaseStatuses Family = "release-statuses"
	Nodes           Family = "nodes"
	Heartbeats      Family = "heartbeats"
	Drains          Family = "drains"
	Runtimes        Family = "runtimes"
	NodeStatuses    Family = "node-statuses"
	Routings        Family = "routings"
	ProxyAcks       Family = "proxy-acks"
	Traffic         Family = "traffic"
	FormationStatus Family = "formation-statuses"
	Coordinator     Family = "coordinator"
	Certs           Family = "certs"
	ACMEChallenges  Family = "acme-challenges"
)

// DefaultFamilies is what the scheduler and deisctl need: everything but
// configs, certificates and ACME challenges.
var DefaultFamilies = []Family{Formations, Layers, Releases, ReleaseStatuses, Nodes, Heartbeats, Drains,
	Runtimes, NodeStatuses, Routings, ProxyAcks, Traffic, FormationStatus, Coordinator}

// AllFamilies is every family a View can keep.
var AllFamilies = append(append([]Family(nil), DefaultFamilies...), Configs, Certs, ACMEChallenges)

// prefix is the key (Coordinator) or key prefix of the family.
func (fam Family) prefix(k state.Keys) string {
	switch fam {
	case Formations:
		return k.Formations()
	case Layers:
		return k.AllLayers()
	case Configs:
		return k.Configs()
	case Releases:
		return k.AllReleases()
	case ReleaseStatuses:
		return k.AllReleaseStatuses()
	case Nodes:
		return k.Nodes()
	case Heartbeats:
		return k.Heartbeats()
	case Drains:
		return k.Drains()
	case Runtimes:
		return k.Runtimes()
	case NodeStatuses:
		return k.NodeStatuses()
	case Routings:
		return k.Routings()
	case ProxyAcks:
		return k.AllProxyAcks()
	case Traffic:
		return k.AllTraffic()
	case FormationStatus:
		return k.FormationStatuses()
	case Coordinator:
		return k.Coordinator()
	case Certs:
		return k.AllCerts()
	case ACMEChallenges:
		return k.AllACMEChallenges()
	}
	return ""
}

// single reports whether the family is one key rather than a prefix.
func (fam Family) single() bool { return fam == Coordinator }

// keyRef is a parsed key: its family and the names in it.
type keyRef struct {
	fam       Family
	formation string
	node      string
	name      string // layer, cert or challenge name
	version   int    // release and release status
}

// parser classifies keys of the families a view keeps.
type parser struct {
	keys state.Keys
	fams []Family
}

// parse returns what key is, or false for a key of no kept family or of
// an unexpected shape.
func (p parser) parse(key string) (keyRef, bool) {
	for _, fam := range p.fams {
		pre := fam.prefix(p.keys)
		if fam.single() {
			if key == pre {
				return keyRef{fam: fam}, true
			}
			continue
		}
		parts, ok := state.Under(key, pre)
		if !ok {
			continue
		}
		r := keyRef{fam: fam}
		switch fam {
		case Formations, Configs, Routings, FormationStatus:
			if len(parts) != 1 {
				return r, false
			}
			r.formation = parts[0]
		case Nodes, Heartbeats, Drains, Runtimes, NodeStatuses:
			if len(parts) != 1 {
				return r, false
			}
			r.node = parts[0]
		case Layers, Certs, ACMEChallenges:
			if len(parts) != 2 {
				return r, false
			}
			r.formation, r.name = parts[0], parts[1]
		case ProxyAcks, Traffic:
			if len(parts) != 2 {
				return r, false
			}
			r.node, r.formation = parts[0], parts[1]
		case Releases, ReleaseStatuses:
			if len(parts) != 2 {
				return r, false
			}
			v, err := strconv.Atoi(parts[1])
			if err != nil || v <= 0 {
				return r, false
			}
			r.formation, r.version = parts[0], v
		}
		return r, true
	}
	return keyRef{}, false
}

// formationRange is the key or prefix of formation f's keys in the family,
// or false for a family not keyed by formation first.
func (fam Family) formationRange(k state.Keys, f string) (string, bool) {
	switch fam {
	case Formations:
		return k.Formation(f), true
	case Layers:
		return k.Layers(f), true
	case Configs:
		return k.Config(f), true
	case Releases:
		return k.Releases(f), true
	case ReleaseStatuses:
		return k.ReleaseStatuses(f), true
	case Routings:
		return k.Routing(f), true
	case FormationStatus:
		return k.FormationStatus(f), true
	case Certs:
		return k.Certs(f), true
	case ACMEChallenges:
		return k.ACMEChallenges(f), true
	}
	return "", false
}

// FormationRanges are the keys (and prefixes, ending in "/") that hold
// formation f's keys of the families given: what a reader allowed only
// some formations' keys (a proxy node, issue 10) may read and watch. A
// family not keyed by formation first is an error.
func FormationRanges(prefix, f string, fams ...Family) ([]string, error) {
	if err := state.ValidateName("formation", f); err != nil {
		return nil, err
	}
	k := state.NewKeys(prefix)
	out := make([]string, 0, len(fams))
	for _, fam := range fams {
		r, ok := fam.formationRange(k, f)
		if !ok {
			return nil, fmt.Errorf("view: family %s is not keyed by formation", fam)
		}
		out = append(out, r)
	}
	return out, nil
}
