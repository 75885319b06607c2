package ctl

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (b *builder) formationCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "formations:create",
			Category:  "formations",
			Usage:     "create a formation: an app with a runtime layer, a proxy layer and an empty config",
			ArgsUsage: "NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "base-domain",
				Usage: "also serve the formation at NAME.BASE-DOMAIN (added to its domains) and show that URL"}},
		}, formationsCreate),
		b.cmd(&cli.Command{
			Name:     "formations:list",
			Aliases:  []string{"formations"},
			Category: "formations",
			Usage:    "list formations with their current release",
			Flags:    []cli.Flag{jsonFlag()},
		}, formationsList),
		b.cmd(&cli.Command{
			Name:      "formations:info",
			Category:  "formations",
			Usage:     "show a formation: git remote, URL, release, scale, layers",
			ArgsUsage: "[NAME]",
			Flags:     []cli.Flag{formationFlag(), jsonFlag()},
		}, formationsInfo),
		b.cmd(&cli.Command{
			Name:      "formations:destroy",
			Category:  "formations",
			Usage:     "destroy a formation with its layers, config, releases, builds, permissions and status; the coordinator then removes its containers, git repository, build logs and cache, slugs and images",
			ArgsUsage: "NAME --confirm NAME",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "confirm", Usage: "the formation's name again, to confirm"}},
		}, formationsDestroy),
	}
}

func formationsCreate(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "NAME")
	}
	name := args[0]
	if err := state.ValidateName("formation", name); err != nil {
		return err
	}
	now := time.Now().UTC()
	f := state.Formation{Name: name, Created: now}
	base := c.String("base-domain")
	if base != "" {
		if err := state.ValidateDomain(base); err != nil {
			return fmt.Errorf("--base-domain: %w", err)
		}
		f.Domains = []string{name + "." + base}
	}
	k := e.keys()
	layer := func(typ state.LayerType) clientv3.Op {
		l := state.Layer{Formation: name, Name: string(typ), Type: typ,
			Selector: map[string]string{"role": string(typ)}, Created: now}
		return clientv3.OpPut(k.Layer(name, l.Name), state.Marshal(l))
	}
	err := e.store.CreateFormation(c.Context, &f,
		layer(state.LayerRuntime), layer(state.LayerProxy),
		clientv3.OpPut(k.Config(name), state.Marshal(state.Config{Vars: map[string]string{}})))
	if errors.Is(err, state.ErrExists) {
		return fmt.Errorf("formation %q already exists: pick another name, or see it with deisctl formations:info %s", name, name)
	}
	if err != nil {
		return err
	}
	ce, err := readCoordinator(c.Context, e.store)
	if err == nil {
		ce, err = ce.withHTTPS(c.Context, e.store)
	}
	if err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Creating formation %s... done\n", name)
	if !ce.registered {
		fmt.Fprintln(w, "The coordinator has not registered yet; the remote and URL below use its defaults.")
	}
	remote := ce.gitRemote(name)
	fields := [][2]string{{"Git remote", remote}, {"URL", ce.url(name, base)}}
	if u := ce.httpsURL(name, base); u != "" {
		fields = append(fields, [2]string{"HTTPS URL", u})
	}
	_ = printFields(w, fields)
	fmt.Fprintf(w, "\nTo deploy, from your app's git repository:\n  git remote add deis %s\n  git push deis main\n", remote)
	return nil
}

type formationJSON struct {
	state.Formation
	Release int `json:"release"`
}

func formationsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "")
	}
	fs, _, err := state.List[state.Formation](c.Context, e.store.KV, e.keys().Formations())
	if etcdauth.IsPermissionDenied(err) {
		// Not an administrator: the formations granted to this user.
		fs, err = grantedFormations(c.Context, e)
	}
	if err != nil {
		return err
	}
	out := make([]formationJSON, 0, len(fs))
	for _, f := range fs {
		fj := formationJSON{Formation: f.Value}
		rel, err := e.store.LatestRelease(c.Context, f.Value.Name)
		switch {
		case err == nil:
			fj.Release = rel.Version
		case !errors.Is(err, state.ErrNotFound):
			return err
		}
		out = append(out, fj)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(c.App.Writer, "No formations yet: create one with deisctl formations:create NAME")
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, f := range out {
		rel := "-"
		if f.Release > 0 {
			rel = fmt.Sprintf("v%d", f.Release)
		}
		domains := "-"
		if len(f.Domains) > 0 {
			domains = strings.Join(f.Domains, ",")
		}
		rows = append(rows, []string{f.Name, rel, domains, fmtTime(f.Created)})
	}
	return printTable(c.App.Writer, []string{"NAME", "RELEASE", "DOMAINS", "CREATED"}, rows)
}

type formationInfoJSON struct {
	Formation      state.Formation `json:"formation"`
	Layers         []state.Layer   `json:"layers"`
	Release        *state.Release  `json:"release,omitempty"`
	EffectiveScale map[string]int  `json:"effectiveScale"`
	GitRemote      string          `json:"gitRemote"`
	URL            string          `json:"url"`
	HTTPSURL       string          `json:"httpsURL,omitempty"`
}

func formationsInfo(c *cli.Context, e *env, args []string) error {
	name, err := formationArg(c, args)
	if err != nil {
		return err
	}
	f, _, err := e.store.GetFormation(c.Context, name)
	if err != nil {
		return err
	}
	layers, _, err := state.List[state.Layer](c.Context, e.store.KV, e.keys().Layers(name))
	if err != nil {
		return err
	}
	rel, err := e.store.LatestRelease(c.Context, name)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	ce, err := readCoordinator(c.Context, e.store)
	if err == nil {
		ce, err = ce.withHTTPS(c.Context, e.store)
	}
	if err != nil {
		return err
	}
	info := formationInfoJSON{Formation: *f, Layers: []state.Layer{}, Release: rel,
		EffectiveScale: f.EffectiveScale(processTypes(rel)), GitRemote: ce.gitRemote(name), URL: ce.url(name, ""),
		HTTPSURL: ce.httpsURL(name, "")}
	for _, l := range layers {
		info.Layers = append(info.Layers, l.Value)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, info)
	}
	release := "none yet: deploy with git push deis main"
	if rel != nil {
		release = fmt.Sprintf("v%d (%s)", rel.Version, rel.Description)
	}
	scale := kvList(info.EffectiveScale, ", ")
	if f.Scale == nil {
		scale += " (default: web=1 when the release has a web type)"
	}
	var ls []string
	for _, l := range info.Layers {
		ls = append(ls, fmt.Sprintf("%s (%s, %s)", l.Name, l.Type, kvList(l.Selector, ",")))
	}
	fmt.Fprintf(c.App.Writer, "=== %s\n", name)
	return printFields(c.App.Writer, [][2]string{
		{"Git remote", info.GitRemote},
		{"URL", info.URL},
		{"HTTPS URL", orDash(info.HTTPSURL)},
		{"Domains", orDash(strings.Join(f.Domains, ", "))},
		{"Release", release},
		{"Scale", scale},
		{"Layers", orDash(strings.Join(ls, ", "))},
		{"Created", fmtTime(f.Created)},
	})
}

func formationsDestroy(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "NAME --confirm NAME")
	}
	name := args[0]
	if err := state.ValidateName("formation", name); err != nil {
		return err
	}
	if c.String("confirm") != name {
		return fmt.Errorf("destroying %q removes its config, releases, builds and git repository and stops its containers: to go ahead run deisctl formations:destroy %s --confirm %s", name, name, name)
	}
	if err := e.store.DestroyFormation(c.Context, name); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Destroying %s (with its layers, config, releases, status, builds and permissions)... done\n", name)
	fmt.Fprintln(c.App.Writer, "The coordinator now removes its containers, git repository, build logs and cache, and its slugs and images.")
	return nil
}

// processTypes are the process types of a release (none for nil or a release
// without a build).
func processTypes(r *state.Release) map[string]string {
	if r == nil || r.Build == nil {
		return map[string]string{}
	}
	return r.Build.ProcessTypes
}
