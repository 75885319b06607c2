package ctl

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (b *builder) layerCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "layers",
			Aliases:  []string{"layers:list"},
			Category: "layers",
			Usage:    "list a formation's layers with the nodes their selectors match",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, layersList),
		b.cmd(&cli.Command{
			Name:      "layers:create",
			Category:  "layers",
			Usage:     "add a layer: the nodes whose labels match the selector run (runtime) or route to (proxy) the formation's containers",
			ArgsUsage: "NAME --type runtime|proxy --selector K=V[,K=V...]",
			Flags: []cli.Flag{formationFlag(),
				&cli.StringFlag{Name: "type", Usage: "runtime (nodes that run the containers) or proxy (nodes that route HTTP to them)"},
				&cli.StringFlag{Name: "selector", Usage: "node labels the layer's nodes must all have, as K=V[,K=V...] (agents set them with --labels)"}},
		}, layersCreate),
		b.cmd(&cli.Command{
			Name:      "layers:info",
			Category:  "layers",
			Usage:     "show a layer and the registered nodes it matches, and whether each is up",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{formationFlag(), jsonFlag()},
		}, layersInfo),
		b.cmd(&cli.Command{
			Name:      "layers:destroy",
			Category:  "layers",
			Usage:     "remove a layer; its nodes stop running or routing the formation unless another layer matches them",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{formationFlag()},
		}, layersDestroy),
	}
}

var (
	labelKey   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	labelValue = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
)

// parseSelector parses K=V[,K=V...]. Each key may appear once: a node
// label may hold several values, but a selector asks for one per key.
func parseSelector(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no selector given: pass --selector K=V[,K=V...], like --selector role=runtime")
	}
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("malformed selector %q: use K=V[,K=V...], like role=runtime", p)
		}
		if len(k) > 63 || !labelKey.MatchString(k) {
			return nil, fmt.Errorf("invalid selector key %q: use letters, digits, '.', '_', '-' and '/', starting and ending with a letter or digit", k)
		}
		if len(v) > 63 || !labelValue.MatchString(v) {
			return nil, fmt.Errorf("invalid selector value %q for %s: use letters, digits, '.', '_' and '-', starting and ending with a letter or digit", v, k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("selector key %q given twice: a selector asks for one value per key (a node labelled %s=a,%s=b matches %s=a)", k, k, k, k)
		}
		out[k] = v
	}
	return out, nil
}

func parseLayerType(s string) (state.LayerType, error) {
	switch t := state.LayerType(s); t {
	case state.LayerRuntime, state.LayerProxy:
		return t, nil
	case "":
		return "", errors.New("no layer type given: pass --type runtime (nodes that run the containers) or --type proxy (nodes that route HTTP to them)")
	}
	return "", fmt.Errorf("invalid layer type %q: use --type runtime (nodes that run the containers) or --type proxy (nodes that route HTTP to them)", s)
}

// layerFromEntry fills a stored layer's formation and name from its key when
// the document lacks them.
func layerFromEntry(k state.Keys, e state.Entry[state.Layer]) state.Layer {
	l := e.Value
	rest := strings.TrimPrefix(e.Key, k.AllLayers())
	if f, name, ok := strings.Cut(rest, "/"); ok {
		if l.Formation == "" {
			l.Formation = f
		}
		if l.Name == "" {
			l.Name = name
		}
	}
	return l
}

// layerNode is a registered node a layer's selector matches.
type layerNode struct {
	Name     string            `json:"name"`
	Addr     string            `json:"addr"`
	Labels   map[string]string `json:"labels"`
	Up       bool              `json:"up"` // heartbeat present
	Draining bool              `json:"draining"`
}

// matchingNodes returns the registered nodes l matches, in name order (the
// order of nodes).
func matchingNodes(l *state.Layer, nodes []state.Node, alive map[string]bool, drains map[string]state.Drain) []layerNode {
	out := []layerNode{}
	for i := range nodes {
		n := &nodes[i]
		if !l.Matches(n) {
			continue
		}
		_, draining := drains[n.Name]
		out = append(out, layerNode{Name: n.Name, Addr: n.Addr, Labels: n.Labels, Up: alive[n.Name], Draining: draining})
	}
	return out
}

// nodeState is "up" or "lost", with ", draining" when it is.
func nodeState(up, draining bool) string {
	s := "lost"
	if up {
		s = "up"
	}
	if draining {
		s += ", draining"
	}
	return s
}

// agentHint says how to start a node a selector matches.
func agentHint(sel map[string]string) string {
	return "start an agent with --labels " + kvList(sel, ",")
}

func layerArg(c *cli.Context, args []string, usage string) (string, error) {
	if len(args) != 1 {
		return "", usageError(c, usage)
	}
	if err := state.ValidateName("layer", args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

func layersCreate(c *cli.Context, e *env, args []string) error {
	name, err := layerArg(c, args, "NAME --type runtime|proxy --selector K=V[,K=V...] [-f NAME]")
	if err != nil {
		return err
	}
	typ, err := parseLayerType(c.String("type"))
	if err != nil {
		return err
	}
	sel, err := parseSelector(c.String("selector"))
	if err != nil {
		return err
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	k := e.keys()
	l := state.Layer{Formation: f, Name: name, Type: typ, Selector: sel, Created: time.Now().UTC()}
	ok, err := e.store.Commit(c.Context, []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(k.Layer(f, name)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), ">", 0),
	}, clientv3.OpPut(k.Layer(f, name), state.Marshal(l)))
	if err != nil {
		return err
	}
	if !ok {
		if _, _, err := e.store.GetFormation(c.Context, f); err != nil {
			return err
		}
		return fmt.Errorf("layer %q already exists in %s: see it with deisctl layers:info %s -f %s, or destroy it first", name, f, name, f)
	}
	w, err := readWorld(c.Context, e.store)
	if err != nil {
		return err
	}
	out := c.App.Writer
	fmt.Fprintf(out, "Creating %s layer %s of %s (%s)... done\n", typ, name, f, kvList(sel, ","))
	var up []string
	for _, n := range matchingNodes(&l, w.nodes, w.alive, w.drains) {
		if n.Up {
			up = append(up, n.Name)
		}
	}
	if len(up) == 0 {
		fmt.Fprintf(out, "No live node matches it yet: %s\n", agentHint(sel))
	} else {
		fmt.Fprintf(out, "Live nodes it matches: %s\n", strings.Join(up, ", "))
	}
	return nil
}

// layerJSON is a layer with the nodes it matches.
type layerJSON struct {
	state.Layer
	Nodes []layerNode `json:"nodes"`
}

func layersList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	w, err := readWorld(c.Context, e.store)
	if err != nil {
		return err
	}
	out := []layerJSON{}
	for i := range w.layers {
		if l := &w.layers[i]; l.Formation == form.Name {
			out = append(out, layerJSON{Layer: *l, Nodes: matchingNodes(l, w.nodes, w.alive, w.drains)})
		}
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(c.App.Writer, "%s has no layers: create them with deisctl layers:create runtime --type runtime --selector role=runtime -f %s (and --type proxy)\n", form.Name, form.Name)
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, l := range out {
		var ns []string
		for _, n := range l.Nodes {
			if n.Up && !n.Draining {
				ns = append(ns, n.Name)
			} else {
				ns = append(ns, n.Name+" ("+nodeState(n.Up, n.Draining)+")")
			}
		}
		nodes := "none"
		if len(ns) > 0 {
			nodes = strings.Join(ns, ", ")
		}
		rows = append(rows, []string{l.Name, string(l.Type), kvList(l.Selector, ","), nodes})
	}
	return printTable(c.App.Writer, []string{"NAME", "TYPE", "SELECTOR", "NODES"}, rows)
}

// getLayer reads layer name of formation f, with errors that say what to do.
func getLayer(c *cli.Context, e *env, f, name string) (*state.Layer, error) {
	var l state.Layer
	_, err := e.store.Get(c.Context, e.keys().Layer(f, name), &l)
	if errors.Is(err, state.ErrNotFound) {
		if _, _, ferr := e.store.GetFormation(c.Context, f); ferr != nil {
			return nil, ferr
		}
		return nil, fmt.Errorf("layer %q not found in %s: list its layers with deisctl layers -f %s: %w", name, f, f, state.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	l.Formation, l.Name = f, name
	return &l, nil
}

func layersInfo(c *cli.Context, e *env, args []string) error {
	name, err := layerArg(c, args, "NAME [-f NAME]")
	if err != nil {
		return err
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	l, err := getLayer(c, e, f, name)
	if err != nil {
		return err
	}
	w, err := readWorld(c.Context, e.store)
	if err != nil {
		return err
	}
	info := layerJSON{Layer: *l, Nodes: matchingNodes(l, w.nodes, w.alive, w.drains)}
	if c.Bool("json") {
		return printJSON(c.App.Writer, info)
	}
	out := c.App.Writer
	fmt.Fprintf(out, "=== %s Layer %s\n", f, name)
	if err := printFields(out, [][2]string{
		{"Type", string(l.Type)},
		{"Selector", kvList(l.Selector, ",")},
		{"Created", fmtTime(l.Created)},
	}); err != nil {
		return err
	}
	if len(info.Nodes) == 0 {
		fmt.Fprintf(out, "\nNo registered node matches %s: %s\n", kvList(l.Selector, ","), agentHint(l.Selector))
		return nil
	}
	fmt.Fprintln(out)
	rows := make([][]string, 0, len(info.Nodes))
	for _, n := range info.Nodes {
		rows = append(rows, []string{n.Name, orDash(n.Addr), kvList(n.Labels, ","), nodeState(n.Up, n.Draining)})
	}
	return printTable(out, []string{"NODE", "ADDR", "LABELS", "STATE"}, rows)
}

func layersDestroy(c *cli.Context, e *env, args []string) error {
	name, err := layerArg(c, args, "NAME [-f NAME]")
	if err != nil {
		return err
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	l, err := getLayer(c, e, f, name)
	if err != nil {
		return err
	}
	k := e.keys()
	ok, err := e.store.Commit(c.Context, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k.Layer(f, name)), ">", 0)},
		clientv3.OpDelete(k.Layer(f, name)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("layer %q not found in %s (destroyed meanwhile?): list its layers with deisctl layers -f %s: %w", name, f, f, state.ErrNotFound)
	}
	out := c.App.Writer
	fmt.Fprintf(out, "Destroying layer %s of %s... done\n", name, f)
	rest, _, err := state.List[state.Layer](c.Context, e.store.KV, k.Layers(f))
	if err != nil {
		return err
	}
	for _, r := range rest {
		if r.Value.Type == l.Type {
			return nil
		}
	}
	switch l.Type {
	case state.LayerRuntime:
		fmt.Fprintf(out, "%s has no runtime layer left, so the scheduler has no node to run its containers on: create one with deisctl layers:create runtime --type runtime --selector role=runtime -f %s\n", f, f)
	case state.LayerProxy:
		fmt.Fprintf(out, "%s has no proxy layer left, so no proxy routes HTTP to it: create one with deisctl layers:create proxy --type proxy --selector role=proxy -f %s\n", f, f)
	}
	return nil
}
