package ctl

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

// Bounds of the limits deisctl accepts. Docker refuses memory limits below
// 6 MiB and CPU limits below 0.01.
const (
	minMemoryBytes = 6 << 20
	maxMemoryBytes = 1 << 50 // 1 PiB: anything above is a typo
	minCPUs        = 0.01
	maxCPUs        = 1024
)

func (b *builder) limitCommands() []*cli.Command {
	kindFlags := func(verb string) []cli.Flag {
		return []cli.Flag{
			&cli.BoolFlag{Name: "memory", Usage: verb + " memory limits", DisableDefaultText: true},
			&cli.BoolFlag{Name: "cpu", Usage: verb + " CPU limits", DisableDefaultText: true},
		}
	}
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "limits",
			Aliases:  []string{"limits:list"},
			Category: "limits",
			Usage:    "show the memory and CPU limits of a formation's process types and its request body limit",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, limitsList),
		b.cmd(&cli.Command{
			Name:     "limits:set",
			Category: "limits",
			Usage: "limit each container of a process type: memory by default (web=512M; units K, M, G or plain bytes), " +
				"CPUs with --cpu (web=0.5); or, with --body SIZE alone, the request body size the proxies accept for the formation (--body 50M)",
			ArgsUsage: "TYPE=VALUE [TYPE=VALUE...] | --body SIZE",
			Flags: append([]cli.Flag{formationFlag(),
				&cli.StringFlag{Name: "body", Usage: "set the largest request body the proxies pass to the formation (K, M, G; at most 1G); larger ones get 413"},
			}, kindFlags("set")...),
		}, limitsSet),
		b.cmd(&cli.Command{
			Name:      "limits:unset",
			Category:  "limits",
			Usage:     "remove the limits of process types: memory and CPU, or only the one given by --memory or --cpu; or, with --body alone, the formation's request body limit",
			ArgsUsage: "TYPE [TYPE...] | --body",
			Flags: append([]cli.Flag{formationFlag(),
				&cli.BoolFlag{Name: "body", Usage: "remove the request body limit: the proxies' default applies again", DisableDefaultText: true},
			}, kindFlags("remove only")...),
		}, limitsUnset),
	}
}

// parseMemory parses a memory size: a whole number of bytes, or a number
// with the unit K, M or G (powers of 1024; "MB" is read as "M").
func parseMemory(typ, s string) (int64, error) {
	example := fmt.Sprintf("like %s=512M or %s=1G", typ, typ)
	i := strings.IndexFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789.+-", r) })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToUpper(s[i:])
	v, err := strconv.ParseFloat(num, 64)
	if num == "" || err != nil {
		return 0, fmt.Errorf("invalid memory limit %q for %s: use a number of bytes with an optional unit K, M or G, %s", s, typ, example)
	}
	mult := map[string]float64{"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q in memory limit %q for %s: use K, M or G, %s", s[i:], s, typ, example)
	}
	if v <= 0 {
		return 0, fmt.Errorf("memory limit %q for %s must be more than zero: to remove the limit use deisctl limits:unset %s --memory", s, typ, typ)
	}
	if mult == 1 && v != math.Trunc(v) {
		return 0, fmt.Errorf("invalid memory limit %q for %s: a limit without a unit is a whole number of bytes, %s", s, typ, example)
	}
	bytes := v * mult
	if bytes > maxMemoryBytes {
		return 0, fmt.Errorf("memory limit %q for %s is too large (more than 1 PiB)", s, typ)
	}
	if bytes < minMemoryBytes {
		return 0, fmt.Errorf("memory limit %q for %s is below Docker's minimum of 6M", s, typ)
	}
	return int64(bytes), nil
}

// parseCPUs parses a number of CPUs, like 0.5 or 2.
func parseCPUs(typ, s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("invalid CPU limit %q for %s: use a number of CPUs, like %s=0.5 or %s=2", s, typ, typ, typ)
	}
	if v <= 0 {
		return 0, fmt.Errorf("CPU limit %q for %s must be more than zero: to remove the limit use deisctl limits:unset %s --cpu", s, typ, typ)
	}
	if v < minCPUs {
		return 0, fmt.Errorf("CPU limit %q for %s is below Docker's minimum of %.2f", s, typ, minCPUs)
	}
	if v > maxCPUs {
		return 0, fmt.Errorf("CPU limit %q for %s is more than %d CPUs", s, typ, maxCPUs)
	}
	return v, nil
}

// limitKind is what limits:set and limits:unset act on.
type limitKind struct{ memory, cpu bool }

func (k limitKind) String() string {
	switch {
	case k.memory && k.cpu:
		return "memory and CPU limits"
	case k.cpu:
		return "CPU limit"
	}
	return "memory limit"
}

// parseLimits parses TYPE=VALUE arguments as memory sizes or, with cpu, as
// CPU counts. A type given twice keeps its last value.
func parseLimits(args []string, cpu bool) (map[string]state.ResourceLimits, error) {
	if len(args) == 0 {
		return nil, errors.New("no limits given: use deisctl limits:set TYPE=VALUE, like web=512M, --cpu web=0.5, or --body 50M")
	}
	out := map[string]state.ResourceLimits{}
	for _, a := range args {
		t, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("malformed limit %q: use TYPE=VALUE, like web=512M, or --cpu web=0.5", a)
		}
		if err := state.ValidateProcessType(t); err != nil {
			return nil, err
		}
		var l state.ResourceLimits
		var err error
		if cpu {
			l.CPUs, err = parseCPUs(t, v)
		} else {
			l.MemoryBytes, err = parseMemory(t, v)
		}
		if err != nil {
			return nil, err
		}
		out[t] = l
	}
	return out, nil
}

// fmtBytes renders a size with the largest unit that divides it.
func fmtBytes(b int64) string {
	switch {
	case b == 0:
		return "-"
	case b%(1<<30) == 0:
		return fmt.Sprintf("%dG", b>>30)
	case b%(1<<20) == 0:
		return fmt.Sprintf("%dM", b>>20)
	case b%(1<<10) == 0:
		return fmt.Sprintf("%dK", b>>10)
	}
	return strconv.FormatInt(b, 10)
}

func fmtCPUs(v float64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// checkTypes refuses process types the formation's latest release does not
// have, to catch typos. A formation without a release takes any type.
func checkTypes(c *cli.Context, e *env, f string, types []string) error {
	rel, err := e.store.LatestRelease(c.Context, f)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	have := processTypes(rel)
	for _, t := range types {
		if _, ok := have[t]; !ok {
			list := "none"
			if len(have) > 0 {
				list = strings.Join(sortedKeys(have), ", ")
			}
			return fmt.Errorf("unknown process type %q: release v%d of %s has process types %s (from its Procfile)", t, rel.Version, f, list)
		}
	}
	return nil
}

func limitsSet(c *cli.Context, e *env, args []string) error {
	if c.IsSet("body") {
		if len(args) > 0 || c.Bool("memory") || c.Bool("cpu") {
			return errors.New("pass --body alone: set the request body limit and the memory or CPU limits in two commands")
		}
		return bodySet(c, e, c.String("body"))
	}
	if c.Bool("memory") && c.Bool("cpu") {
		return errors.New("pass --memory or --cpu, not both: set memory and CPU limits in two commands")
	}
	kind := limitKind{memory: !c.Bool("cpu"), cpu: c.Bool("cpu")}
	want, err := parseLimits(args, kind.cpu)
	if err != nil {
		return err
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	if err := checkTypes(c, e, f, sortedKeys(want)); err != nil {
		return err
	}
	changed := false
	next, err := state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		changed = false
		if cur == nil {
			return nil, errFormationGone(f)
		}
		n := *cur
		n.Limits = maps.Clone(cur.Limits)
		if n.Limits == nil {
			n.Limits = map[string]state.ResourceLimits{}
		}
		for t, l := range want {
			have := n.Limits[t]
			if kind.cpu {
				have.CPUs = l.CPUs
			} else {
				have.MemoryBytes = l.MemoryBytes
			}
			n.Limits[t] = have
		}
		if maps.Equal(n.Limits, cur.Limits) {
			return nil, nil
		}
		bumpRestarts(&n, cur, sortedKeys(want))
		changed = true
		return &n, nil
	})
	if err != nil {
		return err
	}
	var parts []string
	for _, t := range sortedKeys(want) {
		if kind.cpu {
			parts = append(parts, t+"="+fmtCPUs(want[t].CPUs))
		} else {
			parts = append(parts, t+"="+fmtBytes(want[t].MemoryBytes))
		}
	}
	if !changed {
		fmt.Fprintf(c.App.Writer, "Setting %s of %s: %s... already set, no change\n", kind, f, strings.Join(parts, ", "))
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Setting %s of %s: %s... done\n", kind, f, strings.Join(parts, ", "))
	fmt.Fprintf(c.App.Writer, "New containers with the new limits replace the old ones without downtime. Limits now: %s\n", limitsSummary(next.Limits))
	return nil
}

func limitsUnset(c *cli.Context, e *env, args []string) error {
	if c.Bool("body") {
		if len(args) > 0 || c.Bool("memory") || c.Bool("cpu") {
			return errors.New("pass --body alone: remove the request body limit and the memory or CPU limits in two commands")
		}
		return bodyUnset(c, e)
	}
	if len(args) == 0 {
		return usageError(c, "TYPE [TYPE...] [--memory|--cpu] [-f NAME], or --body [-f NAME]")
	}
	for _, t := range args {
		if err := state.ValidateProcessType(t); err != nil {
			return err
		}
	}
	kind := limitKind{memory: c.Bool("memory"), cpu: c.Bool("cpu")}
	if !kind.memory && !kind.cpu {
		kind = limitKind{memory: true, cpu: true}
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	changed := false
	next, err := state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		changed = false
		if cur == nil {
			return nil, errFormationGone(f)
		}
		n := *cur
		n.Limits = maps.Clone(cur.Limits)
		for _, t := range args {
			l, ok := n.Limits[t]
			if !ok {
				continue
			}
			if kind.memory {
				l.MemoryBytes = 0
			}
			if kind.cpu {
				l.CPUs = 0
			}
			if l == (state.ResourceLimits{}) {
				delete(n.Limits, t)
			} else {
				n.Limits[t] = l
			}
		}
		if maps.Equal(n.Limits, cur.Limits) {
			return nil, nil
		}
		bumpRestarts(&n, cur, args)
		if len(n.Limits) == 0 {
			n.Limits = nil
		}
		changed = true
		return &n, nil
	})
	if err != nil {
		return err
	}
	types := strings.Join(args, ", ")
	if !changed {
		fmt.Fprintf(c.App.Writer, "Removing %s of %s from %s... none set, no change\n", kind, types, f)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Removing %s of %s from %s... done\nLimits now: %s\n", kind, types, f, limitsSummary(next.Limits))
	return nil
}

// limitsSummary renders limits as "web=512M/0.5 CPU, worker=1G".
func limitsSummary(ls map[string]state.ResourceLimits) string {
	if len(ls) == 0 {
		return "none"
	}
	var parts []string
	for _, t := range sortedKeys(ls) {
		l := ls[t]
		var v []string
		if l.MemoryBytes > 0 {
			v = append(v, fmtBytes(l.MemoryBytes))
		}
		if l.CPUs > 0 {
			v = append(v, fmtCPUs(l.CPUs)+" CPU")
		}
		parts = append(parts, t+"="+strings.Join(v, "/"))
	}
	return strings.Join(parts, ", ")
}

func limitsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	ls := form.Limits
	if ls == nil {
		ls = map[string]state.ResourceLimits{}
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, limitsJSON{ProcessTypes: ls, MaxBodyBytes: form.MaxBodyBytes})
	}
	w := c.App.Writer
	fmt.Fprintf(w, "=== %s Limits\n", form.Name)
	if len(ls) == 0 {
		fmt.Fprintf(w, "none: containers may use all of their node's memory and CPU; set one with deisctl limits:set web=512M -f %s\n", form.Name)
	} else {
		rows := make([][]string, 0, len(ls))
		for _, t := range sortedKeys(ls) {
			rows = append(rows, []string{t, fmtBytes(ls[t].MemoryBytes), fmtCPUs(ls[t].CPUs)})
		}
		if err := printTable(w, []string{"TYPE", "MEMORY", "CPUS"}, rows); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "Request body: %s\n", bodySummary(form.MaxBodyBytes))
	return nil
}

// limitsJSON is what limits --json prints. MaxBodyBytes 0 means the
// proxies' default.
type limitsJSON struct {
	ProcessTypes map[string]state.ResourceLimits `json:"processTypes"`
	MaxBodyBytes int64                           `json:"maxBodyBytes"`
}

// defaultBody describes the proxies' default request body limit, which
// deisctl cannot read: it is each proxy's deis-agent --max-body.
var defaultBody = fmt.Sprintf("the proxies' default (%s unless the operator set deis-agent --max-body)", fmtBytes(state.DefaultMaxBodyBytes))

// bodySummary renders a formation's request body limit.
func bodySummary(n int64) string {
	if n == 0 {
		return "at most " + defaultBody
	}
	return "at most " + fmtBytes(n) + " (deisctl limits:unset --body goes back to the proxies' default)"
}

// parseBody parses the value of limits:set --body.
func parseBody(s string) (int64, error) {
	n, err := state.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("invalid request body limit %q: use a size with the unit K, M or G, like --body 50M", s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("request body limit %q must be more than zero: to go back to the proxies' default use deisctl limits:unset --body", s)
	}
	if n > state.MaxMaxBodyBytes {
		return 0, fmt.Errorf("request body limit %q is more than 1G, the most the proxies accept: they buffer each body on disk; upload larger files straight to object storage", s)
	}
	return n, nil
}

// bodySet sets the formation's request body limit. The proxies apply it
// with the routing: no container restarts.
func bodySet(c *cli.Context, e *env, value string) error {
	n, err := parseBody(value)
	if err != nil {
		return err
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	changed, err := setMaxBody(c, e, f, n)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if !changed {
		fmt.Fprintf(w, "Setting request body limit of %s: %s... already set, no change\n", f, fmtBytes(n))
		return nil
	}
	fmt.Fprintf(w, "Setting request body limit of %s: %s... done\n", f, fmtBytes(n))
	fmt.Fprintln(w, "The proxies apply it without restarting any container; a larger request body gets 413 Request Entity Too Large.")
	return nil
}

// bodyUnset removes the formation's request body limit.
func bodyUnset(c *cli.Context, e *env) error {
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	changed, err := setMaxBody(c, e, f, 0)
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(c.App.Writer, "Removing the request body limit of %s... none set, no change\n", f)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Removing the request body limit of %s... done\nRequest body: at most %s\n", f, defaultBody)
	return nil
}

// setMaxBody stores n (0: the proxies' default) as formation f's request
// body limit and says whether that changed anything.
func setMaxBody(c *cli.Context, e *env, f string, n int64) (bool, error) {
	changed := false
	_, err := state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		changed = false
		if cur == nil {
			return nil, errFormationGone(f)
		}
		if cur.MaxBodyBytes == n {
			return nil, nil
		}
		next := *cur
		next.MaxBodyBytes = n
		changed = true
		return &next, nil
	})
	return changed, err
}

// bumpRestarts gives the containers of the types whose limits changed new
// names, so the scheduler replaces them with the same handoff as a release
// instead of the agents restarting them in place.
func bumpRestarts(n, cur *state.Formation, types []string) {
	n.Restarts = maps.Clone(cur.Restarts)
	if n.Restarts == nil {
		n.Restarts = map[string]int{}
	}
	for _, t := range types {
		if cur.Limits[t] != n.Limits[t] {
			n.Restarts[t]++
		}
	}
}
