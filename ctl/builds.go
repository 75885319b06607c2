package ctl

import (
	"fmt"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

func (b *builder) buildCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "builds",
			Aliases:  []string{"builds:list"},
			Category: "builds",
			Usage:    "list a formation's builds, newest first",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, buildsList),
		b.cmd(&cli.Command{
			Name:      "builds:info",
			Category:  "builds",
			Usage:     "show one build",
			ArgsUsage: "ID",
			Flags:     []cli.Flag{formationFlag(), jsonFlag()},
		}, buildsInfo),
	}
}

func buildsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	if _, _, err := e.store.GetFormation(c.Context, f); err != nil {
		return err
	}
	list, _, err := state.List[state.Build](c.Context, e.store.KV, e.keys().Builds(f))
	if err != nil {
		return err
	}
	out := make([]state.Build, 0, len(list))
	for _, b := range list {
		out = append(out, b.Value)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(c.App.Writer, "%s has no builds yet: deploy with git push deis main\n", f)
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, b := range out {
		slug := "-"
		if b.Slug != nil {
			slug = short(b.Slug.SHA256)
		}
		rows = append(rows, []string{b.ID, fmtTime(b.Created), short(b.GitSHA), slug,
			orDash(strings.Join(sortedKeys(b.ProcessTypes), ","))})
	}
	return printTable(c.App.Writer, []string{"ID", "CREATED", "GIT SHA", "SLUG", "TYPES"}, rows)
}

func buildsInfo(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "ID [-f NAME]")
	}
	id := args[0]
	if id == "" || strings.ContainsAny(id, "/ ") {
		return fmt.Errorf("invalid build id %q: list builds with deisctl builds", id)
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	var b state.Build
	if _, err := e.store.Get(c.Context, e.keys().Build(f, id), &b); err != nil {
		return fmt.Errorf("build %s of %s: %w (list builds with deisctl builds -f %s)", id, f, err, f)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, b)
	}
	slug := "-"
	if b.Slug != nil {
		slug = fmt.Sprintf("%s (%d bytes)", b.Slug.SHA256, b.Slug.Size)
	}
	fields := [][2]string{
		{"Created", fmtTime(b.Created)},
		{"Git SHA", orDash(b.GitSHA)},
		{"Slug", slug},
		{"Image", orDash(b.Image)},
		{"Buildpack", orDash(b.Buildpack)},
	}
	for _, t := range sortedKeys(b.ProcessTypes) {
		fields = append(fields, [2]string{"Process " + t, b.ProcessTypes[t]})
	}
	fmt.Fprintf(c.App.Writer, "=== %s Build %s\n", f, b.ID)
	return printFields(c.App.Writer, fields)
}
