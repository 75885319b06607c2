package ctl

import (
	"fmt"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

func (b *builder) autoRollbackCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "autorollback",
			Category:  "releases",
			Usage:     "show, or turn on or off, the automatic rollback of a release that crash-loops, fails its health checks or answers mostly 5xx after it went live",
			ArgsUsage: "[on|off]",
			Flags:     []cli.Flag{formationFlag()},
		}, autoRollback),
	}
}

func autoRollback(c *cli.Context, e *env, args []string) error {
	if len(args) > 1 || (len(args) == 1 && args[0] != "on" && args[0] != "off") {
		return usageError(c, "[on|off] [-f NAME]")
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	word := map[bool]string{false: "on", true: "off"}
	if len(args) == 0 {
		fmt.Fprintf(c.App.Writer, "Automatic rollback of %s is %s\n", f, word[form.AutoRollbackOff])
		return nil
	}
	off := args[0] == "off"
	changed := false
	_, err = state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		if cur == nil {
			return nil, errFormationGone(f)
		}
		if cur.AutoRollbackOff == off {
			return nil, nil
		}
		n := *cur
		n.AutoRollbackOff = off
		changed = true
		return &n, nil
	})
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(c.App.Writer, "Automatic rollback of %s is %s already, no change\n", f, word[off])
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Turning automatic rollback of %s %s... done\n", f, word[off])
	return nil
}
