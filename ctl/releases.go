package ctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/urfave/cli/v2"
)

func (b *builder) releaseCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "releases",
			Aliases:  []string{"releases:list"},
			Category: "releases",
			Usage:    "list a formation's releases, newest first",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, releasesList),
		b.cmd(&cli.Command{
			Name:      "releases:info",
			Category:  "releases",
			Usage:     "show one release: build, slug, process types, config keys",
			ArgsUsage: "vN",
			Flags:     []cli.Flag{formationFlag(), jsonFlag()},
		}, releasesInfo),
		b.cmd(&cli.Command{
			Name:      "rollback",
			Category:  "releases",
			Usage:     "create a release with the build and config of an earlier one (default: the one before the current)",
			ArgsUsage: "[vN]",
			Flags:     []cli.Flag{formationFlag()},
		}, rollback),
	}
}

// releaseJSON is a release with its rollout status.
type releaseJSON struct {
	state.Release
	Status string `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// releaseStatus says what happened to release v: "failed" (with the
// coordinator's reason), "live" (proxies route to it), "rolling out" (newest,
// not routed yet) or "".
func releaseStatus(v, latest, routed int, failed map[int]state.ReleaseStatus) (string, string) {
	if st, ok := failed[v]; ok && st.Failed {
		return "failed", st.Reason
	}
	if v == routed {
		return "live", ""
	}
	if v == latest {
		return "rolling out", ""
	}
	return "", ""
}

// rolloutInfo reads, at one revision, formation f's releases and what
// releaseStatus needs: the release statuses (as the view counts them) and
// the routed release (0 when there is no routing yet).
func rolloutInfo(ctx context.Context, s *state.Store, f string) (*view.State, map[int]state.ReleaseStatus, int, error) {
	st, err := view.LoadFormation(ctx, s.KV, s.Keys.Prefix, f)
	if err != nil {
		return nil, nil, 0, err
	}
	routed := 0
	if r := st.Routing[f]; r.Doc != nil {
		routed = r.Doc.Release
	}
	return st, releaseStatuses(st, f), routed, nil
}

func releasesList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	st, failed, routed, err := rolloutInfo(c.Context, e.store, f)
	if err != nil {
		return err
	}
	latest := 0
	if r := st.LatestRelease(f); r != nil {
		latest = r.Version
	}
	vs := st.Versions(f)
	out := make([]releaseJSON, 0, len(vs))
	for i := len(vs) - 1; i >= 0; i-- {
		r := releaseJSON{Release: *st.Releases[f][vs[i]]}
		r.Status, r.Reason = releaseStatus(r.Version, latest, routed, failed)
		out = append(out, r)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(c.App.Writer, "%s has no releases yet: deploy with git push deis main\n", f)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "=== %s Releases\n", f)
	rows := make([][]string, 0, len(out))
	for _, r := range out {
		st := r.Status
		if r.Reason != "" {
			st += ": " + r.Reason
		}
		rows = append(rows, []string{fmt.Sprintf("v%d", r.Version), fmtTime(r.Created), r.Description, orDash(st)})
	}
	return printTable(c.App.Writer, []string{"VERSION", "CREATED", "DESCRIPTION", "STATUS"}, rows)
}

// parseVersion accepts "v3" or "3".
func parseVersion(s string) (int, error) {
	v, err := strconv.Atoi(strings.TrimPrefix(strings.ToLower(s), "v"))
	if err != nil || v < 1 {
		return 0, fmt.Errorf("invalid release %q: use a version like v3", s)
	}
	return v, nil
}

func releasesInfo(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "vN [-f NAME]")
	}
	v, err := parseVersion(args[0])
	if err != nil {
		return err
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	st, failed, routed, err := rolloutInfo(c.Context, e.store, f)
	if err != nil {
		return err
	}
	r := st.Releases[f][v]
	if r == nil {
		return fmt.Errorf("release v%d does not exist in formation %s: list releases with deisctl releases -f %s: %w", v, f, f, state.ErrNotFound)
	}
	latest := st.LatestRelease(f)
	rj := releaseJSON{Release: *r}
	rj.Status, rj.Reason = releaseStatus(v, latest.Version, routed, failed)
	if c.Bool("json") {
		return printJSON(c.App.Writer, rj)
	}
	build, slug, types, gitSHA, image := "none (config only)", "-", "-", "-", "-"
	if b := r.Build; b != nil {
		build, gitSHA, image = b.ID, short(b.GitSHA), orDash(b.Image)
		if b.Slug != nil {
			slug = fmt.Sprintf("%s (%d bytes)", b.Slug.SHA256, b.Slug.Size)
		}
		var ts []string
		for _, t := range sortedKeys(b.ProcessTypes) {
			ts = append(ts, t+": "+b.ProcessTypes[t])
		}
		types = orDash(strings.Join(ts, "; "))
	}
	status := orDash(rj.Status)
	if rj.Reason != "" {
		status += ": " + rj.Reason
	}
	fmt.Fprintf(c.App.Writer, "=== %s Release v%d\n", f, v)
	return printFields(c.App.Writer, [][2]string{
		{"Description", r.Description},
		{"Created", fmtTime(r.Created)},
		{"Status", status},
		{"Build", build},
		{"Git SHA", gitSHA},
		{"Slug", slug},
		{"Image", image},
		{"Process types", types},
		{"Config keys", orDash(strings.Join(sortedKeys(r.Config), ", "))},
	})
}

func rollback(c *cli.Context, e *env, args []string) error {
	if len(args) > 1 {
		return usageError(c, "[vN] [-f NAME]")
	}
	want := 0
	if len(args) == 1 {
		v, err := parseVersion(args[0])
		if err != nil {
			return err
		}
		want = v
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	rel, target, err := e.store.Rollback(c.Context, f, state.Rollback{Target: want})
	if err != nil {
		return err
	}
	oldBuild := rel.Build
	if oldBuild != nil && rollbackMayLackArtifacts(target, rel.Version-1) {
		fmt.Fprintf(c.App.ErrWriter, "deisctl: warning: v%d is older than the newest %d releases of %s: its slug may have been collected; the coordinator keeps the last --keep-releases releases (default %d), and a release whose slug or image is gone cannot start: deploy again with git push if it does not\n",
			target, keptReleases, f, keptReleases)
	}
	fmt.Fprintf(c.App.Writer, "Rolling back %s to v%d... done, v%d\n", f, target, rel.Version)
	return nil
}

// keptReleases is how many of a formation's newest releases keep their
// slugs and images through the coordinator's garbage collection by default
// (its --keep-releases, builder.DefaultKeepReleases).
const keptReleases = 10

// rollbackMayLackArtifacts reports whether release target is older than the
// keptReleases newest releases when current is the newest, so its slug or
// image may have been collected.
func rollbackMayLackArtifacts(target, current int) bool {
	return current-target >= keptReleases
}
