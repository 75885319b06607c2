package ctl

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

func (b *builder) buildCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "builds",
			Aliases:  []string{"builds:list"},
			Category: "builds",
			Usage:    "list a formation's builds, newest first, failed ones with their reason",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, buildsList),
		b.cmd(&cli.Command{
			Name:      "builds:info",
			Category:  "builds",
			Usage:     "show one build and its log (read from the coordinator)",
			ArgsUsage: "ID",
			Flags:     []cli.Flag{formationFlag(), jsonFlag()},
		}, buildsInfo),
	}
}

func buildsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	f, err := existingFormation(c, e)
	if err != nil {
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
			orDash(strings.Join(sortedKeys(b.ProcessTypes), ",")), buildStatus(b, maxReasonInList)})
	}
	return printTable(c.App.Writer, []string{"ID", "CREATED", "GIT SHA", "SLUG", "TYPES", "STATUS"}, rows)
}

// maxReasonInList is the most of a failed build's reason deisctl builds
// shows; builds:info shows all of it.
const maxReasonInList = 80

// buildStatus is "succeeded", or "failed: " and the first line of the
// reason, cut to max bytes (0: no limit).
func buildStatus(b state.Build, max int) string {
	if !b.Failed {
		return "succeeded"
	}
	reason, _, more := strings.Cut(strings.TrimSpace(b.Error), "\n")
	if reason == "" {
		reason = "no reason given"
	}
	if max > 0 && len(reason) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason, more = reason[:cut], true
	}
	if more {
		reason += "..."
	}
	return "failed: " + reason
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
	slug, archive := "-", "-"
	if b.Slug != nil {
		slug = fmt.Sprintf("%s (%d bytes)", b.Slug.SHA256, b.Slug.Size)
	}
	if b.ImageArchive != nil {
		archive = fmt.Sprintf("%s (%d bytes)", b.ImageArchive.SHA256, b.ImageArchive.Size)
	}
	status := "succeeded"
	if b.Failed {
		status = "failed"
	}
	fields := [][2]string{
		{"Status", status},
		{"Created", fmtTime(b.Created)},
		{"Git SHA", orDash(b.GitSHA)},
	}
	if b.Failed {
		fields = append(fields, [2]string{"Error", orDash(strings.Join(strings.Fields(b.Error), " "))})
	} else {
		fields = append(fields, [][2]string{
			{"Slug", slug},
			{"Image", orDash(b.Image)},
			{"Image archive", archive},
			{"Buildpack", orDash(b.Buildpack)},
		}...)
	}
	for _, t := range sortedKeys(b.ProcessTypes) {
		fields = append(fields, [2]string{"Process " + t, b.ProcessTypes[t]})
	}
	w := c.App.Writer
	fmt.Fprintf(w, "=== %s Build %s\n", f, b.ID)
	if err := printFields(w, fields); err != nil {
		return err
	}
	lines, err := fetchBuildLog(c, e, f, b.ID)
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "deisctl: the log of build %s cannot be shown: %v\n", b.ID, err)
		return nil
	}
	fmt.Fprintf(w, "\n=== %s Build %s Log\n", f, b.ID)
	if len(lines) == 0 {
		fmt.Fprintln(w, "(the coordinator keeps no log of this build)")
	}
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return nil
}

// fetchBuildLog reads build id's log from the coordinator's
// GET <SlugURL>/builds/<formation>/<id>.log with deisctl's certificate. A
// build without a log gives no lines.
func fetchBuildLog(c *cli.Context, e *env, f, id string) ([]string, error) {
	ce, err := readCoordinator(c.Context, e.store)
	if err != nil {
		return nil, err
	}
	if !ce.registered || ce.info.SlugURL == "" {
		return nil, errors.New("no coordinator has registered where it serves build logs: start deis-coordinator (with --slug-url)")
	}
	tc, err := e.platformTLS()
	if err != nil {
		return nil, err
	}
	l := &logReader{c: c, e: e, f: f, tls: tc}
	return l.buildLog(ce.info.SlugURL, id)
}
