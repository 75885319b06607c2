package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// metadataKey is where Before stashes the *env in App.Metadata.
const metadataKey = "deisctl.env"

// env is what an etcd command gets: the client (closed in After) and the
// store over it.
type env struct {
	client *clientv3.Client
	store  *state.Store
	cancel context.CancelFunc
	// creds is deisctl's certificate for the agent API and build logs
	// (nil without one); who is the user it acts as.
	creds *access.Creds
	who   access.Identity
	// cfg is how deisctl reached etcd (users:create writes its endpoints
	// into the credentials it makes).
	cfg etcdconn.Config
}

// keys is the key layout of the installation.
func (e *env) keys() state.Keys { return e.store.Keys }

// action is the body of a command that needs etcd; args are its positional
// arguments once trailing flags have been applied.
type action func(c *cli.Context, e *env, args []string) error

// builder collects the commands and remembers which of them need etcd.
type builder struct {
	etcd map[string]bool // command names and aliases that dial etcd
}

// NewApp returns the deisctl command-line application.
func NewApp() *cli.App {
	b := &builder{etcd: map[string]bool{}}
	var cmds []*cli.Command
	cmds = append(cmds, b.formationCommands()...)
	cmds = append(cmds, b.configCommands()...)
	cmds = append(cmds, b.releaseCommands()...)
	cmds = append(cmds, b.autoRollbackCommands()...)
	cmds = append(cmds, b.buildCommands()...)
	cmds = append(cmds, b.scaleCommands()...)
	cmds = append(cmds, b.statusCommands()...)
	cmds = append(cmds, b.domainCommands()...)
	cmds = append(cmds, b.certCommands()...)
	cmds = append(cmds, b.limitCommands()...)
	cmds = append(cmds, b.layerCommands()...)
	cmds = append(cmds, b.nodeCommands()...)
	cmds = append(cmds, b.nodeAccessCommands()...)
	cmds = append(cmds, b.keyCommands()...)
	cmds = append(cmds, b.userCommands()...)
	cmds = append(cmds, b.permCommands()...)
	cmds = append(cmds, b.logCommands()...)
	cmds = append(cmds, b.runCommands()...)
	cmds = append(cmds, completionCommand(), helpCommand())
	for _, c := range cmds {
		ownHelp(c)
	}

	flags := append(etcdconn.Flags(),
		&cli.DurationFlag{Name: "timeout", EnvVars: []string{"DEIS_TIMEOUT"}, Value: 30 * time.Second,
			Usage: "give up on a command after this long"},
		helpFlag())
	return &cli.App{
		Name:                 "deisctl",
		Usage:                "manage the formations, config, releases, scale, domains, limits, layers and nodes of a deis platform",
		UsageText:            "deisctl [global options] command [command options] [arguments...]",
		HideVersion:          true,
		HideHelp:             true, // ownHelp: urfave's shared HelpFlag is written on every parse
		EnableBashCompletion: true,
		Flags:                flags,
		Commands:             cmds,
		Before:               b.before,
		After:                after,
		Action:               rootAction,
		OnUsageError:         func(c *cli.Context, err error, _ bool) error { return usageErr(err, "", flags) },
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintln(c.App.ErrWriter, unknownCommand(c.App, name))
		},
	}
}

// cmd registers a command that needs etcd and wraps its action.
func (b *builder) cmd(cmd *cli.Command, run action) *cli.Command {
	for _, n := range cmd.Names() {
		b.etcd[n] = true
	}
	cmd.Action = func(c *cli.Context) error {
		args, help, err := positional(c)
		if err != nil {
			return err
		}
		if help {
			return showHelp(c)
		}
		e, ok := c.App.Metadata[metadataKey].(*env)
		if !ok {
			return errors.New("ctl: no etcd connection (internal error: the command ran without Before)")
		}
		return explainDenied(c, e, args, run(c, e, args))
	}
	return cmd
}

// helpFlag is each App's own -h/--help. urfave/cli's global HelpFlag is
// written to whenever a flag set is built, which races when two Apps run at
// once (tests run deisctl concurrently in-process); a flag named "help"
// still triggers urfave's help handling.
func helpFlag() cli.Flag {
	return &cli.BoolFlag{Name: "help", Aliases: []string{"h"}, Usage: "show help", DisableDefaultText: true}
}

// ownHelp gives cmd and its subcommands their own help flag instead of
// urfave's global one, and no "help" subcommand (so "help" stays a valid
// argument).
func ownHelp(cmd *cli.Command) {
	cmd.HideHelp, cmd.HideHelpCommand = true, true
	cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error { return usageErr(err, cmd.Name, cmd.Flags) }
	cmd.Flags = append(cmd.Flags, helpFlag())
	for _, sub := range cmd.Subcommands {
		ownHelp(sub)
	}
}

// helpCommand replaces urfave's help command (see helpFlag).
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Aliases:   []string{"h"},
		Usage:     "show the commands, or one command's help",
		ArgsUsage: "[command]",
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				return cli.ShowAppHelp(c)
			}
			name := c.Args().First()
			if c.App.Command(name) == nil {
				return errors.New(unknownCommand(c.App, name))
			}
			return cli.ShowCommandHelp(c.Lineage()[1], name)
		},
	}
}

// before dials etcd for the commands that need it. Help, completion, unknown
// commands and -h never dial.
func (b *builder) before(c *cli.Context) error {
	if !b.needsEtcd(c.Args().Slice()) {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	cfg := etcdconn.FromContext(c)
	if cfg.Credentials == "" && len(cfg.Endpoints) == 0 && cfg.CertFile == "" && cfg.Username == "" {
		// The administrator's credential a one-machine install wrote.
		if d := etcdconn.UserCredentialsDir(); d != "" && etcdconn.HasCredentials(d) {
			cfg.Credentials = d
		}
	}
	cfg, err := cfg.Resolve()
	if err != nil {
		cancel()
		return err
	}
	cl, err := cfg.Dial(ctx)
	if err != nil {
		cancel()
		return err
	}
	e := &env{client: cl, store: state.NewStore(cl, cfg.Prefix), cancel: cancel, cfg: cfg}
	if err := e.identify(cfg); err != nil {
		cl.Close()
		cancel()
		return err
	}
	// Sub-command contexts inherit this one's Context.
	c.Context = ctx
	c.App.Metadata[metadataKey] = e
	return nil
}

func (b *builder) needsEtcd(args []string) bool {
	if len(args) == 0 || !b.etcd[args[0]] {
		return false
	}
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--help" || a == "-help" {
			return false
		}
	}
	return true
}

func after(c *cli.Context) error {
	e, ok := c.App.Metadata[metadataKey].(*env)
	if !ok {
		return nil
	}
	delete(c.App.Metadata, metadataKey)
	err := e.client.Close()
	e.cancel()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("ctl: close etcd client: %w", err)
	}
	return nil
}

// rootAction runs when no command matched: help without arguments, an error
// with a suggestion otherwise.
func rootAction(c *cli.Context) error {
	if !c.Args().Present() {
		return cli.ShowAppHelp(c)
	}
	return errors.New(unknownCommand(c.App, c.Args().First()))
}

func unknownCommand(app *cli.App, name string) string {
	msg := fmt.Sprintf("%q is not a deisctl command", name)
	if s := suggest(commandNames(app), name); len(s) > 0 {
		msg += ": did you mean " + strings.Join(s, " or ") + "?"
	} else {
		msg += ": run deisctl help to list the commands"
	}
	return msg
}

func commandNames(app *cli.App) []string {
	var names []string
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		names = append(names, c.Names()...)
	}
	return names
}

// showHelp prints the help of the running command.
func showHelp(c *cli.Context) error {
	parent := c
	if l := c.Lineage(); len(l) > 1 {
		parent = l[1]
	}
	return cli.ShowCommandHelp(parent, c.Command.Name)
}

// positional returns the command's positional arguments after applying the
// command's flags found among or after them: urfave/cli stops parsing flags at
// the first argument, but people type `deisctl config:set A=1 -f hello`.
// help reports -h or --help.
func positional(c *cli.Context) (args []string, help bool, err error) {
	in := c.Args().Slice()
	for i := 0; i < len(in); i++ {
		a := in[i]
		if a == "--" {
			args = append(args, in[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			args = append(args, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "h" || name == "help" {
			help = true
			continue
		}
		fl := lookupFlag(c.Command.Flags, name)
		if fl == nil {
			return nil, false, unknownFlag(a, c.Command.Name, c.Command.Flags)
		}
		takesValue := true
		if tv, ok := fl.(interface{ TakesValue() bool }); ok {
			takesValue = tv.TakesValue()
		}
		switch {
		case !takesValue && !hasValue:
			value = "true"
		case takesValue && !hasValue:
			if i+1 >= len(in) {
				return nil, false, fmt.Errorf("flag %s needs a value: see deisctl %s --help", a, c.Command.Name)
			}
			i++
			value = in[i]
		}
		for _, n := range fl.Names() {
			if err := c.Set(n, value); err != nil {
				return nil, false, fmt.Errorf("invalid value %q for flag %s: %w", value, a, err)
			}
		}
	}
	return args, help, nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// usageError says how a command is called.
func usageError(c *cli.Context, want string) error {
	return fmt.Errorf("usage: deisctl %s %s (see deisctl %s --help)", c.Command.Name, want, c.Command.Name)
}
