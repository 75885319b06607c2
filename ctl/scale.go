package ctl

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

// maxScale bounds one process type's count, so a typo cannot ask for a
// million containers.
const maxScale = 1000

func (b *builder) scaleCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "scale",
			Category:  "processes",
			Usage:     "set how many containers of each process type run",
			ArgsUsage: "TYPE=N [TYPE=N...]",
			Flags:     []cli.Flag{formationFlag()},
		}, scale),
		b.cmd(&cli.Command{
			Name:      "ps:restart",
			Category:  "processes",
			Usage:     "restart containers without downtime: new ones start and take traffic before the old ones stop",
			ArgsUsage: "[TYPE...]",
			Flags:     []cli.Flag{formationFlag()},
		}, psRestart),
	}
}

// parseScale parses TYPE=N arguments; N is a whole number from 0 to maxScale.
func parseScale(args []string) (map[string]int, error) {
	if len(args) == 0 {
		return nil, errors.New("no process counts given: use deisctl scale TYPE=N, like web=2")
	}
	out := map[string]int{}
	for _, a := range args {
		t, n, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("malformed scale %q: use TYPE=N, like web=2", a)
		}
		if err := state.ValidateProcessType(t); err != nil {
			return nil, err
		}
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("invalid count %q for %s: use a whole number of 0 or more, like %s=2", n, t, t)
		}
		if v > maxScale {
			return nil, fmt.Errorf("count %d for %s is more than %d: scale in smaller steps", v, t, maxScale)
		}
		out[t] = v
	}
	return out, nil
}

func scale(c *cli.Context, e *env, args []string) error {
	want, err := parseScale(args)
	if err != nil {
		return err
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	st, full, err := formationView(c.Context, e, f)
	if err != nil {
		return err
	}
	// The process types of the release that runs (the newest one not
	// marked failed), else of the newest one.
	rel := st.CurrentRelease(f)
	if rel == nil {
		rel = st.LatestRelease(f)
	}
	if rel == nil {
		return fmt.Errorf("%s has no release yet, so no process types to scale: deploy with git push deis main first", f)
	}
	types := processTypes(rel)
	for _, t := range sortedKeys(want) {
		if t == state.ReleaseProcessType {
			return fmt.Errorf("the release process type runs once per release, before it goes live; it cannot be scaled")
		}
		if _, ok := types[t]; !ok {
			have := "none"
			if len(types) > 0 {
				have = strings.Join(sortedKeys(types), ", ")
			}
			return fmt.Errorf("unknown process type %q: release v%d of %s has process types %s (from its Procfile)", t, rel.Version, f, have)
		}
	}
	form := st.Formations[f]
	if form == nil {
		return errFormationGone(f)
	}
	total := form.EffectiveScale(types)
	if form.Scale != nil {
		total = maps.Clone(form.Scale)
	}
	maps.Copy(total, want)
	for t := range total {
		if _, ok := types[t]; !ok || t == state.ReleaseProcessType {
			delete(total, t)
		}
	}
	// A user granted f alone does not see the other formations'
	// containers: the capacity is not checked here, and the scheduler
	// reports what it cannot place (deisctl status).
	if full {
		if err := checkCapacity(st, form, total); err != nil {
			return err
		}
	}
	next, err := state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		if cur == nil {
			return nil, fmt.Errorf("formation %q not found: create it with deisctl formations:create %s: %w", f, f, state.ErrNotFound)
		}
		n := *cur
		if cur.Scale == nil {
			n.Scale = cur.EffectiveScale(types)
		} else {
			n.Scale = maps.Clone(cur.Scale)
		}
		maps.Copy(n.Scale, want)
		return &n, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Scaling processes of %s... done, now running %s\n", f, kvList(next.Scale, ", "))
	return nil
}
