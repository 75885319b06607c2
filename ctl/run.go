package ctl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/deis/deis/agent/api"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

func (b *builder) runCommands() []*cli.Command {
	cmd := b.cmd(&cli.Command{
		Name:      "run",
		Category:  "processes",
		Usage:     "run a command in a one-off container of a formation's current release, with its config, stdin and output",
		ArgsUsage: "[-f NAME] [--] COMMAND [ARGS...]",
		Description: "The command runs on a live node of the formation's runtime layers that runs one of its containers,\n" +
			"as that node runs the current release (the least loaded such node),\n" +
			"like a Procfile command (a single argument is a shell command line: deisctl run 'echo $PORT').\n" +
			"deisctl exits with the command's exit status. Put deisctl's flags before the command, or use --.",
		Flags: []cli.Flag{formationFlag()},
	}, nil)
	// The command's own arguments are not deisctl's flags: they are taken
	// as they are, not through positional.
	cmd.Action = func(c *cli.Context) error {
		e, ok := c.App.Metadata[metadataKey].(*env)
		if !ok { // -h among the arguments before any --
			return showHelp(c)
		}
		return explainDenied(c, e, nil, runOneOff(c, e, c.Args().Slice()))
	}
	return []*cli.Command{cmd}
}

// shellJoin turns arguments into one shell command line: a single argument
// is taken as a command line already, several are quoted word by word.
func shellJoin(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	words := make([]string, len(args))
	for i, a := range args {
		words[i] = shellQuote(a)
	}
	return strings.Join(words, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// runCandidate is a node that may run a one-off container.
type runCandidate struct {
	node     state.Node
	alive    bool // its heartbeat is there
	draining bool
	load     int // containers its runtime databag assigns
}

// pickRunNodes orders the nodes that may run a one-off container of
// formation f: the live nodes matched by one of f's runtime layers that
// serve the agent API, those not draining first, then the fewest
// containers, then by name. deisctl run tries them in turn until one runs
// a container of f. The error says what is missing.
func pickRunNodes(f string, layers []state.Layer, cands []runCandidate) ([]state.Node, error) {
	var runtimeLayers []state.Layer
	for _, l := range layers {
		if l.Type == state.LayerRuntime {
			runtimeLayers = append(runtimeLayers, l)
		}
	}
	if len(runtimeLayers) == 0 {
		return nil, fmt.Errorf("formation %s has no runtime layer, so no node may run its containers: create one with deisctl layers:create runtime --type runtime --selector role=runtime -f %s", f, f)
	}
	var ok []runCandidate
	var noAPI []string
	for _, c := range cands {
		matched := false
		for i := range runtimeLayers {
			if runtimeLayers[i].Matches(&c.node) {
				matched = true
				break
			}
		}
		switch {
		case !matched || !c.alive:
		case c.node.APIURL == "":
			noAPI = append(noAPI, c.node.Name)
		default:
			ok = append(ok, c)
		}
	}
	if len(ok) == 0 {
		if len(noAPI) > 0 {
			return nil, fmt.Errorf("the live nodes of %s's runtime layers (%s) serve no agent API: run deis-agent there with --api-addr", f, strings.Join(noAPI, ", "))
		}
		var sels []string
		for _, l := range runtimeLayers {
			sels = append(sels, l.Name+" ("+kvList(l.Selector, ",")+")")
		}
		return nil, fmt.Errorf("no live node matches the runtime layers of %s: %s: start deis-agent on a node with matching labels (deisctl status -f %s explains)", f, strings.Join(sels, ", "), f)
	}
	sort.SliceStable(ok, func(i, j int) bool {
		a, b := ok[i], ok[j]
		if a.draining != b.draining {
			return !a.draining
		}
		if a.load != b.load {
			return a.load < b.load
		}
		return a.node.Name < b.node.Name
	})
	nodes := make([]state.Node, len(ok))
	for i, c := range ok {
		nodes[i] = c.node
	}
	return nodes, nil
}

func runOneOff(c *cli.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageError(c, "[-f NAME] [--] COMMAND [ARGS...]: no command given, so nothing was run")
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	ctx := c.Context
	w, err := readWorld(ctx, e.store)
	if etcdauth.IsPermissionDenied(err) {
		// A user granted f: its layers and the live nodes suffice.
		w, err = formationWorld(ctx, e, f)
	}
	if err != nil {
		return err
	}
	var ls []state.Layer
	for _, l := range w.st.Layers[f] {
		ls = append(ls, *l)
	}
	cands := make([]runCandidate, 0, len(w.nodes))
	for _, n := range w.nodes {
		_, draining := w.drains[n.Name]
		load, _ := w.st.Load(n.Name)
		cands = append(cands, runCandidate{node: n, alive: w.alive[n.Name], draining: draining, load: load})
	}
	nodes, err := pickRunNodes(f, ls, cands)
	if err != nil {
		return err
	}
	if _, err := e.platformTLS(); err != nil {
		return err
	}

	// The session outlives --timeout, which bounds the reads above.
	sctx := context.WithoutCancel(ctx)
	req := api.RunRequest{Command: shellJoin(args)}
	code := 0
	ran := false
	for _, node := range nodes {
		cl := &api.Client{URL: node.APIURL, TLS: e.nodeTLS(node.Name)}
		// A node that runs no container of f answers 409 before reading
		// stdin: the next one is asked.
		code, err = cl.Run(sctx, f, req, c.App.Reader, c.App.Writer, c.App.ErrWriter)
		var he *api.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusConflict {
			continue
		}
		if err != nil {
			if errors.As(err, &he) && he.Code == http.StatusForbidden {
				return errors.New(he.Msg) // the one line of access.Formation
			}
			if errors.As(err, &he) {
				return fmt.Errorf("node %s: %s", node.Name, he.Msg)
			}
			return fmt.Errorf("run on node %s: %w", node.Name, err)
		}
		ran = true
		break
	}
	if !ran {
		return fmt.Errorf("no node runs %s: scale a process type up first (deisctl scale web=1)", f)
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}
