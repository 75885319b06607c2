package ctl

import (
	"fmt"
	"slices"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

func (b *builder) domainCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "domains",
			Aliases:  []string{"domains:list"},
			Category: "domains",
			Usage:    "list the domains a formation is served at: its default NAME.BASE-DOMAIN and the ones added",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, domainsList),
		b.cmd(&cli.Command{
			Name:      "domains:add",
			Category:  "domains",
			Usage:     "serve a formation at one more domain (point the domain's DNS at the proxy nodes)",
			ArgsUsage: "DOMAIN",
			Flags:     []cli.Flag{formationFlag()},
		}, domainsAdd),
		b.cmd(&cli.Command{
			Name:      "domains:remove",
			Category:  "domains",
			Usage:     "stop serving a formation at an added domain",
			ArgsUsage: "DOMAIN",
			Flags:     []cli.Flag{formationFlag()},
		}, domainsRemove),
	}
}

// defaultDomain is the domain every formation is served at, whatever its
// Domains say: NAME.BASE, BASE being the coordinator's base domain.
func defaultDomain(ce coordinatorEndpoints, f string) string {
	return f + "." + ce.info.BaseDomain
}

// domainOwner returns the formation other than self that serves domain d,
// as an added domain or as its default one, or "".
func domainOwner(formations []state.Formation, base, self, d string) string {
	for _, o := range formations {
		if o.Name == self {
			continue
		}
		if o.Name+"."+base == d || slices.Contains(o.Domains, d) {
			return o.Name
		}
	}
	return ""
}

// domainArg validates the DOMAIN argument of domains:add and domains:remove.
func domainArg(c *cli.Context, args []string) (string, error) {
	if len(args) != 1 {
		return "", usageError(c, "DOMAIN [-f NAME]")
	}
	if err := state.ValidateDomain(args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

func domainsAdd(c *cli.Context, e *env, args []string) error {
	d, err := domainArg(c, args)
	if err != nil {
		return err
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	ce, err := readCoordinator(c.Context, e.store)
	if err != nil {
		return err
	}
	if d == defaultDomain(ce, f) {
		return fmt.Errorf("%s is the default domain of %s and is always served: add other domains only", d, f)
	}
	added, unchecked := false, false
	_, err = state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		if cur == nil {
			return nil, errFormationGone(f)
		}
		if slices.Contains(cur.Domains, d) {
			return nil, nil
		}
		// Re-read the others on every attempt so a retry sees fresh data.
		all, _, err := state.List[state.Formation](c.Context, e.store.KV, e.keys().Formations())
		if etcdauth.IsPermissionDenied(err) {
			// A user granted f alone cannot read the other formations:
			// the proxies route a domain claimed twice to the first
			// formation by name, and deisctl status says so.
			unchecked, all, err = true, nil, nil
		}
		if err != nil {
			return nil, err
		}
		others := make([]state.Formation, 0, len(all))
		for _, o := range all {
			others = append(others, o.Value)
		}
		if owner := domainOwner(others, ce.info.BaseDomain, f, d); owner != "" {
			return nil, fmt.Errorf("domain %s is already used by formation %s: remove it there first with deisctl domains:remove %s -f %s", d, owner, d, owner)
		}
		n := *cur
		n.Domains = append(slices.Clone(cur.Domains), d)
		slices.Sort(n.Domains)
		n.Domains = slices.Compact(n.Domains)
		added = true
		return &n, nil
	})
	if err != nil {
		return err
	}
	if !added {
		fmt.Fprintf(c.App.Writer, "Adding %s to %s... already there, no change\n", d, f)
		return nil
	}
	if unchecked {
		fmt.Fprintf(c.App.ErrWriter, "deisctl: %s cannot read the other formations, so %s was not checked against their domains: if one claims it, the proxies route it to the first formation by name (deisctl status -f %s shows it)\n", e.user(), d, f)
	}
	fmt.Fprintf(c.App.Writer, "Adding %s to %s... done\nPoint the DNS of %s at your proxy nodes; they serve it once they apply the new routing (see deisctl status -f %s).\n", d, f, d, f)
	return nil
}

func domainsRemove(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "DOMAIN [-f NAME]")
	}
	// A domain stored before a rule refused it can still be removed.
	d, invalid := args[0], state.ValidateDomain(args[0])
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	ce, err := readCoordinator(c.Context, e.store)
	if err != nil {
		return err
	}
	if d == defaultDomain(ce, f) {
		return fmt.Errorf("%s is the default domain of %s and is always served: it cannot be removed", d, f)
	}
	_, err = state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		if cur == nil {
			return nil, errFormationGone(f)
		}
		i := slices.Index(cur.Domains, d)
		if i < 0 && invalid != nil {
			return nil, invalid
		}
		if i < 0 {
			return nil, fmt.Errorf("%s is not a domain of %s: list them with deisctl domains -f %s: %w", d, f, f, state.ErrNotFound)
		}
		n := *cur
		n.Domains = slices.Delete(slices.Clone(cur.Domains), i, i+1)
		if len(n.Domains) == 0 {
			n.Domains = nil
		}
		return &n, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Removing %s from %s... done\n", d, f)
	return nil
}

// domainsJSON is what domains --json prints.
type domainsJSON struct {
	Formation string `json:"formation"`
	// Default is NAME.BASE-DOMAIN, always served.
	Default string   `json:"default"`
	Domains []string `json:"domains"`
}

func domainsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	ce, err := readCoordinator(c.Context, e.store)
	if err != nil {
		return err
	}
	out := domainsJSON{Formation: form.Name, Default: defaultDomain(ce, form.Name), Domains: []string{}}
	for _, d := range form.Domains {
		if d != out.Default {
			out.Domains = append(out.Domains, d)
		}
	}
	slices.Sort(out.Domains)
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "=== %s Domains\n%s (default, always served)\n", form.Name, out.Default)
	for _, d := range out.Domains {
		fmt.Fprintln(w, d)
	}
	if len(out.Domains) == 0 {
		fmt.Fprintf(w, "No other domains: add one with deisctl domains:add www.example.com -f %s\n", form.Name)
	}
	return nil
}
