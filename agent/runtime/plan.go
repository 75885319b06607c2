package runtime

import (
	"fmt"
	"sort"
	"time"

	"github.com/deis/deis/pkg/state"
)

// actual is one Docker container labelled for this node, as listed or
// inspected.
type actual struct {
	ID     string
	Name   string // Docker name, without the leading slash
	Labels map[string]string
	// State is Docker's: created, running, paused, restarting, removing,
	// exited or dead.
	State  string
	Status string      // Docker's words, like "Exited (1) 3 seconds ago"
	Ports  map[int]int // container port -> published host port (tcp)
	// Started and Restarts (how often Docker's restart policy restarted
	// it) are known only from an inspect.
	Started  time.Time
	Restarts int
	// IP is the container's address on its network, known only from an
	// inspect ("" if none).
	IP string
	// Stopping is set when the runtime is already stopping the container.
	Stopping bool
}

// specName is the spec a container was created for, or its Docker name.
func (a *actual) specName() string {
	if n := a.Labels[labelName]; n != "" {
		return n
	}
	return a.Name
}

type taskKind string

const (
	// taskStart creates and starts the container of a spec.
	taskStart taskKind = "start"
	// taskRecreate removes the container in the way, then starts the spec.
	taskRecreate taskKind = "recreate"
	// taskStop stops and removes a container no spec wants.
	taskStop taskKind = "stop"
)

// task is one step towards the databag, with the reason it is needed.
type task struct {
	Kind taskKind
	// Spec is the container to start (start, recreate).
	Spec *state.ContainerSpec
	// Container is the Docker container to replace or stop (recreate, stop).
	Container *actual
	Reason    string
}

// plan compares the containers node must run with the Docker containers
// labelled for it and returns what to do, specs in name order first, then
// stops in name order. Containers already being stopped get no task, and
// neither do one-off containers (deisctl run), which are not the loop's.
func plan(p profile, desired []state.ContainerSpec, containers []actual) []task {
	byName := map[string]*actual{}
	for i := range containers {
		byName[containers[i].Name] = &containers[i]
	}
	specs := append([]state.ContainerSpec(nil), desired...)
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	var tasks []task
	claimed := map[string]bool{}
	for i := range specs {
		s := &specs[i]
		dn := dockerName(p.Node, s.Name)
		if claimed[dn] {
			continue // a duplicate spec name; the first one wins
		}
		claimed[dn] = true
		if t := planOne(p, s, byName[dn]); t != nil {
			tasks = append(tasks, *t)
		}
	}
	var stops []task
	for i := range containers {
		c := &containers[i]
		if claimed[c.Name] || c.Stopping || isOneOff(c.Labels) {
			continue
		}
		reason := fmt.Sprintf("container %s no longer assigned", c.specName())
		stops = append(stops, task{Kind: taskStop, Container: c, Reason: reason})
	}
	sort.Slice(stops, func(i, j int) bool { return stops[i].Container.Name < stops[j].Container.Name })
	return append(tasks, stops...)
}

// planOne says what the container c (nil: none) with the spec's Docker name
// needs; nil means it can be adopted as it is.
func planOne(p profile, s *state.ContainerSpec, c *actual) *task {
	if c == nil {
		return &task{Kind: taskStart, Spec: s, Reason: fmt.Sprintf("container %s missing", s.Name)}
	}
	recreate := func(why string) *task {
		return &task{Kind: taskRecreate, Spec: s, Container: c, Reason: fmt.Sprintf("container %s %s", s.Name, why)}
	}
	switch {
	case c.Stopping:
		return recreate("is being stopped but is assigned again")
	case c.State == "removing":
		return recreate("is being removed")
	case c.State == "exited":
		return recreate(fmt.Sprintf("exited (%s)", c.Status))
	case c.State == "dead":
		return recreate("is dead")
	case c.State == "created":
		return recreate("was created but never started")
	}
	want := labelsFor(p, *s)
	for _, k := range []string{labelName, labelNode, labelSpec} {
		if c.Labels[k] != want[k] {
			return recreate("was created from an outdated spec")
		}
	}
	return nil
}
