package ctl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (b *builder) configCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "config",
			Aliases:  []string{"config:list"},
			Category: "config",
			Usage:    "show a formation's config vars",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, configList),
		b.cmd(&cli.Command{
			Name:      "config:set",
			Category:  "config",
			Usage:     "set config vars and create a release with them",
			ArgsUsage: "KEY=VALUE [KEY=VALUE...]",
			Flags:     []cli.Flag{formationFlag()},
		}, configSet),
		b.cmd(&cli.Command{
			Name:      "config:unset",
			Category:  "config",
			Usage:     "remove config vars and create a release without them",
			ArgsUsage: "KEY [KEY...]",
			Flags:     []cli.Flag{formationFlag()},
		}, configUnset),
	}
}

func configList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	vars, _, err := readConfig(c.Context, e.store, f)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, vars)
	}
	fmt.Fprintf(c.App.Writer, "=== %s Config Vars\n", f)
	if len(vars) == 0 {
		fmt.Fprintf(c.App.Writer, "none: set some with deisctl config:set KEY=VALUE -f %s\n", f)
		return nil
	}
	fields := make([][2]string, 0, len(vars))
	for _, k := range sortedKeys(vars) {
		fields = append(fields, [2]string{k, vars[k]})
	}
	return printFields(c.App.Writer, fields)
}

// readConfig returns a formation's config vars (empty if it has no config
// key) and the key's ModRevision (0 if missing).
func readConfig(ctx context.Context, s *state.Store, f string) (map[string]string, int64, error) {
	var cfg state.Config
	rev, err := s.Get(ctx, s.Keys.Config(f), &cfg)
	if errors.Is(err, state.ErrNotFound) {
		return map[string]string{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if cfg.Vars == nil {
		cfg.Vars = map[string]string{}
	}
	return cfg.Vars, rev, nil
}

// parsePairs parses KEY=VALUE arguments. It returns the keys in the order
// given (each once) and the values; the first malformed pair or invalid key
// is an error.
func parsePairs(args []string) ([]string, map[string]string, error) {
	if len(args) == 0 {
		return nil, nil, errors.New("no config vars given: use deisctl config:set KEY=VALUE [KEY=VALUE...]")
	}
	var order []string
	vals := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, nil, fmt.Errorf("malformed config pair %q: use KEY=VALUE", a)
		}
		if err := state.ValidateEnvKey(k); err != nil {
			return nil, nil, err
		}
		if err := state.ValidateSettableKey(k); err != nil {
			return nil, nil, err
		}
		if k == "HEALTHCHECK_PATH" {
			if err := state.ValidateHealthPath(v); err != nil {
				return nil, nil, err
			}
		}
		if _, seen := vals[k]; !seen {
			order = append(order, k)
		}
		vals[k] = v
	}
	return order, vals, nil
}

// parseKeys validates config keys for unset, each once, in order.
func parseKeys(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, errors.New("no config keys given: use deisctl config:unset KEY [KEY...]")
	}
	var order []string
	seen := map[string]bool{}
	for _, k := range args {
		if err := state.ValidateEnvKey(k); err != nil {
			return nil, err
		}
		if !seen[k] {
			seen[k] = true
			order = append(order, k)
		}
	}
	return order, nil
}

func configSet(c *cli.Context, e *env, args []string) error {
	order, vals, err := parsePairs(args)
	if err != nil {
		return err
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	res, err := changeConfig(c.Context, e.store, f, "Set "+strings.Join(order, ", "), func(cur map[string]string) {
		maps.Copy(cur, vals)
	})
	return reportConfigChange(c, "Setting config vars", f, res, err)
}

func configUnset(c *cli.Context, e *env, args []string) error {
	order, err := parseKeys(args)
	if err != nil {
		return err
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	res, err := changeConfig(c.Context, e.store, f, "Unset "+strings.Join(order, ", "), func(cur map[string]string) {
		for _, k := range order {
			delete(cur, k)
		}
	})
	return reportConfigChange(c, "Unsetting "+strings.Join(order, ", "), f, res, err)
}

// reportConfigChange prints what changeConfig did, Heroku style.
func reportConfigChange(c *cli.Context, doing, f string, res configResult, err error) error {
	if err != nil {
		return err
	}
	w := c.App.Writer
	switch {
	case !res.changed:
		fmt.Fprintf(w, "%s of %s... no change, no new release\n", doing, f)
	case res.release == nil:
		fmt.Fprintf(w, "%s of %s... done\n%s has no release yet: the config applies to its first release (git push deis main)\n", doing, f, f)
	default:
		fmt.Fprintf(w, "%s and restarting %s... done, v%d\n", doing, f, res.release.Version)
	}
	return nil
}

type configResult struct {
	changed bool
	release *state.Release // nil when the formation had no release to restart
}

var (
	errNoRelease = errors.New("ctl: formation has no release")
	errUnchanged = errors.New("ctl: config unchanged")
)

// changeConfig applies edit to the formation's config. When the formation
// has a release it writes the new config and appends a release with the
// previous release's build and the new config, in one transaction guarded by
// the config key's ModRevision. Without a release it writes only the config,
// guarded by the config's ModRevision and by release v1 not existing. Lost
// races are retried from a fresh read.
func changeConfig(ctx context.Context, s *state.Store, f, desc string, edit func(map[string]string)) (configResult, error) {
	if _, _, err := s.GetFormation(ctx, f); err != nil {
		return configResult{}, err
	}
	k := s.Keys
	for attempt := 0; attempt < 20; attempt++ {
		rel, err := s.AppendRelease(ctx, f, func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			if prev == nil {
				return nil, nil, nil, errNoRelease
			}
			cur, rev, err := readConfig(ctx, s, f)
			if err != nil {
				return nil, nil, nil, err
			}
			next := maps.Clone(cur)
			edit(next)
			if maps.Equal(cur, next) {
				return nil, nil, nil, errUnchanged
			}
			if err := checkConfigSize(cur, next); err != nil {
				return nil, nil, nil, err
			}
			return &state.Release{Build: prev.Build, Config: next, Description: desc},
				[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k.Config(f)), "=", rev)},
				[]clientv3.Op{clientv3.OpPut(k.Config(f), state.Marshal(state.Config{Vars: next}))}, nil
		})
		switch {
		case err == nil:
			return configResult{changed: true, release: rel}, nil
		case errors.Is(err, errUnchanged):
			return configResult{}, nil
		case state.IsRequestTooLarge(err):
			return configResult{}, tooLarge(err)
		case !errors.Is(err, errNoRelease):
			return configResult{}, err
		}
		cur, rev, err := readConfig(ctx, s, f)
		if err != nil {
			return configResult{}, err
		}
		next := maps.Clone(cur)
		edit(next)
		if maps.Equal(cur, next) {
			return configResult{}, nil
		}
		if err := checkConfigSize(cur, next); err != nil {
			return configResult{}, err
		}
		ok, err := s.Commit(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(k.Config(f)), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(k.Release(f, 1)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), ">", 0),
		}, clientv3.OpPut(k.Config(f), state.Marshal(state.Config{Vars: next})))
		if err != nil {
			return configResult{}, tooLarge(err)
		}
		if ok {
			return configResult{changed: true}, nil
		}
		if _, _, err := s.GetFormation(ctx, f); err != nil {
			return configResult{}, err
		}
	}
	return configResult{}, state.ErrConflict
}

// checkConfigSize refuses a change that makes the config larger than
// state.MaxConfigBytes; a change that shrinks an oversized config (stored
// before the limit) passes, so it can be repaired.
func checkConfigSize(cur, next map[string]string) error {
	err := state.CheckConfigSize(next)
	if err == nil || len(state.Marshal(next)) < len(state.Marshal(cur)) {
		return nil
	}
	return err
}

// tooLarge turns etcd refusing a write for its size into a message that
// says what to do; other errors pass unchanged.
func tooLarge(err error) error {
	if err == nil || !state.IsRequestTooLarge(err) || errors.Is(err, state.ErrTooLarge) {
		return err
	}
	return state.TooLarge("the config is too large for etcd's request size limit: the limit is %s; keep large data in files or a database, and unset the largest vars with deisctl config:unset",
		state.HumanBytes(state.MaxConfigBytes))
}
