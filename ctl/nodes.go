package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (b *builder) nodeCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "nodes:info",
			Category:  "nodes",
			Usage:     "show a node: address, labels, agent API URL, capacity, heartbeat, layers, containers, drain",
			ArgsUsage: "NODE",
			Flags:     []cli.Flag{jsonFlag()},
		}, nodesInfo),
		b.cmd(&cli.Command{
			Name:      "nodes:drain",
			Category:  "nodes",
			Usage:     "move every container off a node before maintenance (--undo to take containers again)",
			ArgsUsage: "NODE",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "undo", DisableDefaultText: true,
				Usage: "stop draining: the node takes new containers again (same as nodes:undrain)"}},
		}, nodesDrain),
		b.cmd(&cli.Command{
			Name:      "nodes:undrain",
			Category:  "nodes",
			Usage:     "stop draining a node: the scheduler may place containers on it again",
			ArgsUsage: "NODE",
		}, nodesUndrain),
	}
}

// nodeArg validates the NODE argument.
func nodeArg(c *cli.Context, args []string) (string, error) {
	if len(args) != 1 {
		return "", usageError(c, "NODE")
	}
	if err := state.ValidateName("node", args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

// errUnknownNode says how to find the registered nodes.
func errUnknownNode(n string) error {
	return fmt.Errorf("node %q is not registered: list nodes with deisctl nodes:list: %w", n, state.ErrNotFound)
}

// nodeContainer is one container on a node: in its runtime databag, in its
// agent's report, or both.
type nodeContainer struct {
	Name      string `json:"name"`
	Formation string `json:"formation"`
	Type      string `json:"type"`
	Release   int    `json:"release"`
	State     string `json:"state"`
	Addr      string `json:"addr,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Desired is false for containers the agent still reports but the
	// runtime databag no longer asks for (being stopped).
	Desired bool `json:"desired"`
}

// nodeContainers joins a node's runtime databag and its agent's report
// (either may be nil), ordered by formation, then name.
func nodeContainers(rt *state.Runtime, ns *state.NodeStatus) []nodeContainer {
	reported := map[string]state.ContainerStatus{}
	if ns != nil {
		for _, cs := range ns.Containers {
			reported[cs.Name] = cs
		}
	}
	out := []nodeContainer{}
	seen := map[string]bool{}
	if rt != nil {
		for _, s := range rt.Containers {
			c := nodeContainer{Name: s.Name, Formation: s.Formation, Type: s.Type, Release: s.Release, State: statePending, Desired: true}
			if st, ok := reported[s.Name]; ok {
				c.State, c.Addr, c.Reason = st.State, st.Addr, st.Reason
			}
			seen[s.Name] = true
			out = append(out, c)
		}
	}
	if ns != nil {
		for _, st := range ns.Containers {
			if !seen[st.Name] {
				out = append(out, nodeContainer{Name: st.Name, Formation: st.Formation, Type: st.Type, Release: st.Release,
					State: st.State, Addr: st.Addr, Reason: st.Reason})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Formation != out[j].Formation {
			return out[i].Formation < out[j].Formation
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// layerRef names one layer of one formation.
type layerRef struct {
	Formation string          `json:"formation"`
	Name      string          `json:"name"`
	Type      state.LayerType `json:"type"`
}

func (r layerRef) String() string { return fmt.Sprintf("%s/%s (%s)", r.Formation, r.Name, r.Type) }

// nodeLayers returns the layers (of every formation) whose selector matches n.
func nodeLayers(n *state.Node, layers []state.Layer) []layerRef {
	out := []layerRef{}
	for i := range layers {
		if l := &layers[i]; l.Matches(n) {
			out = append(out, layerRef{Formation: l.Formation, Name: l.Name, Type: l.Type})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Formation != out[j].Formation {
			return out[i].Formation < out[j].Formation
		}
		return out[i].Name < out[j].Name
	})
	return out
}

type nodeInfoJSON struct {
	Node state.Node `json:"node"`
	// State is "up" (heartbeat present) or "lost".
	State string `json:"state"`
	// Heartbeat is the value of the node's lease-bound heartbeat key; nil
	// when the node is lost.
	Heartbeat  *state.Heartbeat `json:"heartbeat,omitempty"`
	Draining   *state.Drain     `json:"draining,omitempty"`
	Layers     []layerRef       `json:"layers"`
	Containers []nodeContainer  `json:"containers"`
	Pending    []string         `json:"pending,omitempty"`
	Error      string           `json:"error,omitempty"`
}

// readHeartbeat returns a node's heartbeat, or nil when it has none. A
// heartbeat key whose value does not decode still means the node is up.
func readHeartbeat(ctx context.Context, s *state.Store, n string) (*state.Heartbeat, error) {
	resp, err := s.KV.Get(ctx, s.Keys.Heartbeat(n))
	if err != nil {
		return nil, fmt.Errorf("ctl: read heartbeat of %s: %w", n, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	hb := &state.Heartbeat{Node: n}
	_ = json.Unmarshal(resp.Kvs[0].Value, hb)
	return hb, nil
}

// getOptional reads key into v and reports whether it existed.
func getOptional(ctx context.Context, s *state.Store, key string, v any) (bool, error) {
	_, err := s.Get(ctx, key, v)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, state.ErrNotFound):
		return false, nil
	}
	return false, err
}

func nodesInfo(c *cli.Context, e *env, args []string) error {
	name, err := nodeArg(c, args)
	if err != nil {
		return err
	}
	ctx, s, k := c.Context, e.store, e.keys()
	var node state.Node
	found, err := getOptional(ctx, s, k.Node(name), &node)
	if err != nil {
		return err
	}
	if !found {
		return errUnknownNode(name)
	}
	if node.Name == "" {
		node.Name = name
	}
	info := nodeInfoJSON{Node: node, State: "lost", Layers: []layerRef{}}
	if info.Heartbeat, err = readHeartbeat(ctx, s, name); err != nil {
		return err
	}
	if info.Heartbeat != nil {
		info.State = "up"
	}
	var drain state.Drain
	if found, err := getOptional(ctx, s, k.Drain(name), &drain); err != nil {
		return err
	} else if found {
		drain.Node = name
		info.Draining = &drain
	}
	layers, _, err := state.List[state.Layer](ctx, s.KV, k.AllLayers())
	if err != nil {
		return err
	}
	all := make([]state.Layer, 0, len(layers))
	for _, l := range layers {
		all = append(all, layerFromEntry(k, l))
	}
	info.Layers = nodeLayers(&node, all)
	var rt *state.Runtime
	var r state.Runtime
	if found, err := getOptional(ctx, s, k.Runtime(name), &r); err != nil {
		return err
	} else if found {
		rt = &r
	}
	var ns *state.NodeStatus
	var st state.NodeStatus
	if found, err := getOptional(ctx, s, k.NodeStatus(name), &st); err != nil {
		return err
	} else if found {
		ns = &st
		info.Pending, info.Error = st.Pending, st.Error
	}
	info.Containers = nodeContainers(rt, ns)
	if c.Bool("json") {
		return printJSON(c.App.Writer, info)
	}
	return renderNodeInfo(c.App.Writer, info)
}

func renderNodeInfo(w io.Writer, info nodeInfoJSON) error {
	n := info.Node
	heartbeat := "lost: no heartbeat, the agent is down or cannot reach etcd"
	if hb := info.Heartbeat; hb != nil {
		heartbeat = "up, lease held since " + fmtTime(hb.At)
	}
	port := "-"
	if n.HTTPPort > 0 {
		port = strconv.Itoa(n.HTTPPort)
	}
	capacity := "unlimited"
	if n.Capacity > 0 {
		capacity = fmt.Sprintf("%d containers", n.Capacity)
	}
	memory := "unlimited"
	if n.MemoryBytes > 0 {
		memory = fmtBytes(n.MemoryBytes)
	}
	draining := "no"
	if d := info.Draining; d != nil {
		draining = fmt.Sprintf("yes, since %s: undo with deisctl nodes:undrain %s", fmtTime(d.Created), n.Name)
	}
	layers := make([]string, 0, len(info.Layers))
	for _, l := range info.Layers {
		layers = append(layers, l.String())
	}
	fmt.Fprintf(w, "=== %s\n", n.Name)
	fields := [][2]string{
		{"Address", orDash(n.Addr)},
		{"Labels", kvList(n.Labels, ",")},
		{"Proxy HTTP port", port},
		{"Agent API", orDash(n.APIURL)},
		{"Capacity", capacity},
		{"Memory", memory},
		{"Version", orDash(n.Version)},
		{"Started", fmtTime(n.Started)},
		{"Last heartbeat", heartbeat},
		{"Draining", draining},
		{"Layers", orDash(strings.Join(layers, ", "))},
	}
	if info.Error != "" {
		fields = append(fields, [2]string{"Agent error", info.Error})
	}
	if err := printFields(w, fields); err != nil {
		return err
	}
	for _, p := range info.Pending {
		fmt.Fprintf(w, "Pending: %s\n", p)
	}
	if len(info.Containers) == 0 {
		fmt.Fprintln(w, "\nNo containers.")
		return nil
	}
	fmt.Fprintln(w)
	rows := make([][]string, 0, len(info.Containers))
	for _, ct := range info.Containers {
		st := ct.State
		if !ct.Desired {
			st += " (retiring)"
		}
		if ct.Reason != "" {
			st += ": " + ct.Reason
		}
		rows = append(rows, []string{ct.Name, ct.Formation, ct.Type, fmt.Sprintf("v%d", ct.Release), st, orDash(ct.Addr)})
	}
	return printTable(w, []string{"CONTAINER", "FORMATION", "TYPE", "RELEASE", "STATE", "ADDR"}, rows)
}

func nodesDrain(c *cli.Context, e *env, args []string) error {
	if c.Bool("undo") {
		return nodesUndrain(c, e, args)
	}
	name, err := nodeArg(c, args)
	if err != nil {
		return err
	}
	k := e.keys()
	d := state.Drain{Node: name, Created: time.Now().UTC()}
	ok, err := e.store.Commit(c.Context, []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(k.Node(name)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(k.Drain(name)), "=", 0),
	}, clientv3.OpPut(k.Drain(name), state.Marshal(d)))
	if err != nil {
		return err
	}
	out := c.App.Writer
	if !ok {
		var have state.Drain
		found, err := getOptional(c.Context, e.store, k.Drain(name), &have)
		if err != nil {
			return err
		}
		var node state.Node
		if reg, err := getOptional(c.Context, e.store, k.Node(name), &node); err != nil {
			return err
		} else if !reg {
			return errUnknownNode(name)
		}
		if found {
			fmt.Fprintf(out, "%s is already draining (since %s): watch with deisctl status; undo with deisctl nodes:undrain %s\n", name, fmtTime(have.Created), name)
			return nil
		}
		return state.ErrConflict
	}
	fmt.Fprintf(out, "Draining %s... done\n", name)
	fmt.Fprintf(out, "The scheduler moves %s's containers to other nodes with a zero-downtime handoff (each replacement is ready before the old container stops) and places nothing new on it; watch with deisctl status. Undo with deisctl nodes:undrain %s.\n", name, name)
	w, err := readWorld(c.Context, e.store)
	if err != nil {
		return err
	}
	for _, warn := range drainWarnings(name, w) {
		fmt.Fprintf(out, "Warning: %s\n", warn)
	}
	return nil
}

// drainWarnings says what draining node cannot move: formations with
// containers on it whose runtime layers match no other live, undrained node,
// and proxying, which a drain leaves alone.
func drainWarnings(node string, w *world) []string {
	var warns []string
	onNode := map[string]bool{}
	if rt := w.st.Runtimes[node]; rt != nil {
		for _, s := range rt.Containers {
			onNode[s.Formation] = true
		}
	}
	for _, f := range sortedKeys(onNode) {
		var sels []string
		elsewhere := false
		for i := range w.layers {
			l := &w.layers[i]
			if l.Formation != f || l.Type != state.LayerRuntime {
				continue
			}
			sels = append(sels, kvList(l.Selector, ","))
			for _, n := range matchingNodes(l, w.nodes, w.alive, w.drains) {
				if n.Name != node && n.Up && !n.Draining {
					elsewhere = true
				}
			}
		}
		if !elsewhere {
			hint := "create a runtime layer with deisctl layers:create"
			if len(sels) > 0 {
				hint = "start an agent with --labels " + sels[0]
			}
			warns = append(warns, fmt.Sprintf("no other live node is in the runtime layer of %s, so its containers have nowhere to go: %s", f, hint))
		}
	}
	for i := range w.nodes {
		if w.nodes[i].Name != node {
			continue
		}
		for _, l := range nodeLayers(&w.nodes[i], w.layers) {
			if l.Type == state.LayerProxy {
				warns = append(warns, fmt.Sprintf("%s stays in proxy layer %s: a drain moves containers only, so it keeps routing HTTP", node, l))
			}
		}
	}
	return warns
}

func nodesUndrain(c *cli.Context, e *env, args []string) error {
	name, err := nodeArg(c, args)
	if err != nil {
		return err
	}
	k := e.keys()
	ok, err := e.store.Commit(c.Context, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k.Drain(name)), ">", 0)},
		clientv3.OpDelete(k.Drain(name)))
	if err != nil {
		return err
	}
	if !ok {
		var node state.Node
		if reg, err := getOptional(c.Context, e.store, k.Node(name), &node); err != nil {
			return err
		} else if !reg {
			return errUnknownNode(name)
		}
		fmt.Fprintf(c.App.Writer, "%s is not draining: nothing to undo\n", name)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Undraining %s... done: the scheduler may place new containers on it again (it does not move running containers back)\n", name)
	return nil
}
