package api

import (
	"testing"

	"github.com/deis/deis/pkg/state"
)

func TestNewestSpec(t *testing.T) {
	rt := state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
		{Name: "shop.v3.web.1", Formation: "shop", Release: 3, Type: "web"},
		{Name: "shop.v4.release.1", Formation: "shop", Release: 4, Type: state.ReleaseProcessType},
		{Name: "blog.v9.web.1", Formation: "blog", Release: 9, Type: "web"},
		{Name: "shop.v2.worker.1", Formation: "shop", Release: 2, Type: "worker"},
	}}
	// The current release's container; a release phase's release is not live.
	if s := newestSpec(rt, "shop"); s == nil || s.Name != "shop.v3.web.1" {
		t.Errorf("shop: %+v", s)
	}
	// During a rollout, the newest release's.
	rt.Containers = append(rt.Containers, state.ContainerSpec{Name: "shop.v4.web.1", Formation: "shop", Release: 4, Type: "web"})
	if s := newestSpec(rt, "shop"); s == nil || s.Name != "shop.v4.web.1" {
		t.Errorf("shop during a rollout: %+v", s)
	}
	if s := newestSpec(rt, "wiki"); s != nil {
		t.Errorf("a formation the node does not run: %+v", s)
	}
}
