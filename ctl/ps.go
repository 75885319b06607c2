package ctl

import (
	"fmt"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (b *builder) statusCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "ps",
			Category: "processes",
			Usage:    "list a formation's containers with their node and state",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, ps),
		b.cmd(&cli.Command{
			Name:     "status",
			Category: "processes",
			Usage:    "show whether formations have converged on their latest release (all formations without -f); --watch redraws until they have",
			Flags: []cli.Flag{formationFlag(), jsonFlag(),
				&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "redraw every second until everything has converged (raise --timeout for long rollouts)"}},
		}, status),
		b.cmd(&cli.Command{
			Name:     "nodes:list",
			Aliases:  []string{"nodes"},
			Category: "nodes",
			Usage:    "list the registered nodes and whether they are up",
			Flags:    []cli.Flag{jsonFlag()},
		}, nodesList),
	}
}

func clientv3WithPrefixKeysOnly() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
}

func ps(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	w, err := readFormationWorld(c.Context, e, f)
	if err != nil {
		return err
	}
	rows := w.rows(f)
	if c.Bool("json") {
		return printJSON(c.App.Writer, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(c.App.Writer, "%s has no containers: deploy with git push deis main, or scale with deisctl scale web=1 -f %s\n", f, f)
		return nil
	}
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		st := r.State
		if !r.Desired {
			st += " (retiring)"
		}
		if r.Reason != "" {
			st += ": " + r.Reason
		}
		if r.Restarts > 0 {
			st += fmt.Sprintf(" (restarted %d times)", r.Restarts)
		}
		table = append(table, []string{r.Name, r.Type, fmt.Sprintf("v%d", r.Release), r.Node, st, orDash(r.Addr)})
	}
	return printTable(c.App.Writer, []string{"NAME", "TYPE", "RELEASE", "NODE", "STATE", "ADDR"}, table)
}

type statusJSON struct {
	Formations []formationStatus `json:"formations"`
	LostNodes  []string          `json:"lostNodes"`
	// DrainingNodes are the nodes the scheduler is moving containers off.
	DrainingNodes []state.Drain `json:"drainingNodes"`
}

func status(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME] [--watch]")
	}
	if !c.Bool("watch") {
		_, err := statusOnce(c, e)
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		converged, err := statusOnce(c, e)
		if c.Context.Err() != nil {
			return fmt.Errorf("still converging after --timeout: %w", c.Context.Err())
		}
		if err != nil || converged {
			return err
		}
		select {
		case <-c.Context.Done():
			return fmt.Errorf("still converging after --timeout: %w", c.Context.Err())
		case <-tick.C:
		}
		fmt.Fprint(c.App.Writer, "\n")
	}
}

// statusOnce prints the status once and reports whether every formation
// shown has converged.
func statusOnce(c *cli.Context, e *env) (bool, error) {
	w, err := readFormationWorld(c.Context, e, c.String("formation"))
	if err != nil {
		return false, err
	}
	var names []string
	if f := c.String("formation"); f != "" {
		if err := state.ValidateName("formation", f); err != nil {
			return false, err
		}
		if _, _, err := e.store.GetFormation(c.Context, f); err != nil {
			return false, err
		}
		names = []string{f}
	} else {
		for _, f := range w.formations {
			names = append(names, f.Name)
		}
	}
	out := statusJSON{Formations: []formationStatus{}, LostNodes: []string{}, DrainingNodes: []state.Drain{}}
	for _, f := range names {
		st := statusOf(w, f)
		out.Formations = append(out.Formations, st)
	}
	for _, n := range w.nodes {
		if !w.alive[n.Name] {
			out.LostNodes = append(out.LostNodes, n.Name)
		}
	}
	for _, n := range sortedKeys(w.drains) {
		out.DrainingNodes = append(out.DrainingNodes, w.drains[n])
	}
	converged := true
	for _, st := range out.Formations {
		converged = converged && st.Converged
	}
	if c.Bool("json") {
		return converged, printJSON(c.App.Writer, out)
	}
	var b strings.Builder
	if len(names) == 0 {
		b.WriteString("No formations yet: create one with deisctl formations:create NAME\n")
	}
	for i, st := range out.Formations {
		if i > 0 {
			b.WriteString("\n")
		}
		renderStatus(&b, st)
	}
	fmt.Fprintf(&b, "\nNodes: %d registered, %d up", len(w.nodes), len(w.nodes)-len(out.LostNodes))
	if len(out.LostNodes) > 0 {
		fmt.Fprintf(&b, ", lost (no heartbeat): %s", strings.Join(out.LostNodes, ", "))
	}
	b.WriteString("\n")
	if len(out.DrainingNodes) > 0 {
		var ds []string
		for _, d := range out.DrainingNodes {
			ds = append(ds, fmt.Sprintf("%s (since %s)", d.Node, fmtTime(d.Created)))
		}
		fmt.Fprintf(&b, "Draining: %s: the scheduler moves their containers to other nodes; undo with deisctl nodes:undrain NODE\n", strings.Join(ds, ", "))
	}
	_, err = fmt.Fprint(c.App.Writer, b.String())
	return converged, err
}

type nodeJSON struct {
	state.Node
	State    string `json:"state"` // "up" (heartbeat present) or "lost"
	Draining bool   `json:"draining"`
}

func nodesList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "")
	}
	w, err := readWorld(c.Context, e.store)
	if err != nil {
		return err
	}
	out := make([]nodeJSON, 0, len(w.nodes))
	for _, n := range w.nodes {
		st := "lost"
		if w.alive[n.Name] {
			st = "up"
		}
		_, draining := w.drains[n.Name]
		out = append(out, nodeJSON{Node: n, State: st, Draining: draining})
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(c.App.Writer, "No nodes registered: start deis-agent on a host")
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, n := range out {
		rows = append(rows, []string{n.Name, orDash(n.Addr), kvList(n.Labels, ","), nodeState(n.State == "up", n.Draining), fmtTime(n.Started)})
	}
	return printTable(c.App.Writer, []string{"NAME", "ADDR", "LABELS", "STATE", "STARTED"}, rows)
}
