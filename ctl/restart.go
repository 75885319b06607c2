package ctl

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/deis/deis/coordinator/scheduler"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/urfave/cli/v2"
)

// psRestart bumps the restart count of the given process types (all of the
// current release's types when none is given). The scheduler then replaces
// their containers with the same handoff as a release: new ones start beside
// the old, traffic moves when they are ready, the old stop after every proxy
// has moved.
func psRestart(c *cli.Context, e *env, args []string) error {
	f, err := formationName(c)
	if err != nil {
		return err
	}
	rel, err := e.store.LatestRelease(c.Context, f)
	if err != nil {
		if _, _, ferr := e.store.GetFormation(c.Context, f); ferr != nil {
			return ferr
		}
		return fmt.Errorf("%s has no release yet, so nothing to restart: deploy with git push deis main first", f)
	}
	types := processTypes(rel)
	want := args
	if len(want) == 0 {
		want = sortedKeys(types)
	}
	for _, t := range want {
		if _, ok := types[t]; !ok || t == state.ReleaseProcessType {
			return fmt.Errorf("unknown process type %q: release v%d of %s has process types %s", t, rel.Version, f, strings.Join(sortedKeys(types), ", "))
		}
	}
	_, err = state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		if cur == nil {
			return nil, errFormationGone(f)
		}
		n := *cur
		n.Restarts = maps.Clone(cur.Restarts)
		if n.Restarts == nil {
			n.Restarts = map[string]int{}
		}
		for _, t := range want {
			n.Restarts[t]++
		}
		return &n, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Restarting %s of %s... done: new containers start beside the old ones, which stop once traffic has moved\n", strings.Join(want, ", "), f)
	return nil
}

// checkCapacity returns an error saying how many containers fit when the
// formation's live runtime nodes cannot hold the scale asked for. With no
// live node it says nothing here: `deisctl status` reports that.
func checkCapacity(st *view.State, f *state.Formation, scale map[string]int) error {
	// What the formation has placed now is replaced; other formations'
	// containers stay.
	own, ownMem := map[string]int{}, map[string]int64{}
	for _, p := range st.Placed(f.Name) {
		own[p.Node]++
		ownMem[p.Node] += p.Spec.Limits.MemoryBytes
	}
	var bins []scheduler.Bin
	for _, n := range st.LayerNodes(f.Name, state.LayerRuntime) {
		node := st.Nodes[n]
		count, mem := st.Load(n)
		bins = append(bins, scheduler.Bin{Node: n, Capacity: node.Capacity, Memory: node.MemoryBytes,
			Count: count - own[n], MemoryUsed: mem - ownMem[n]})
	}
	if len(bins) == 0 {
		return nil
	}
	var slots []scheduler.Slot
	for _, t := range sortedKeys(scale) {
		for i := 0; i < scale[t]; i++ {
			slots = append(slots, scheduler.Slot{Name: fmt.Sprintf("%s.%d", t, i), Type: t, Memory: f.Limits[t].MemoryBytes})
		}
	}
	_, err := scheduler.Place(slots, bins)
	var nc *scheduler.ErrNoCapacity
	if errors.As(err, &nc) {
		return fmt.Errorf("cannot scale %s to %d containers: the runtime layer's %d live node(s) can hold only %d more; add nodes, raise --capacity on the agents, or scale lower",
			f.Name, nc.Wanted, len(bins), nc.Fits)
	}
	return err
}
