package ctl

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

// formationFlag is -f/--formation; commands default it from the git remote.
func formationFlag() cli.Flag {
	return &cli.StringFlag{Name: "formation", Aliases: []string{"f"},
		Usage: "formation to act on (default: from the current directory's \"deis\" git remote)"}
}

// errNoFormation is returned when neither -f nor a deis git remote names a
// formation.
var errNoFormation = errors.New("no formation given: pass -f NAME or run inside a git repository with a deis remote")

// formationName returns the formation a command acts on: -f, else the one
// named by `git remote get-url deis` in the current directory.
func formationName(c *cli.Context) (string, error) {
	name := c.String("formation")
	if name == "" {
		var err error
		if name, err = formationFromGit(c.Context); err != nil {
			return "", err
		}
	}
	if err := state.ValidateName("formation", name); err != nil {
		return "", err
	}
	return name, nil
}

// formationArg is formationName for commands that also accept the name as
// their first argument (formations:info NAME).
func formationArg(c *cli.Context, args []string) (string, error) {
	if len(args) > 1 {
		return "", usageError(c, "[NAME]")
	}
	if len(args) == 1 {
		if err := state.ValidateName("formation", args[0]); err != nil {
			return "", err
		}
		return args[0], nil
	}
	return formationName(c)
}

func formationFromGit(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "remote", "get-url", "deis").Output()
	if err != nil {
		return "", errNoFormation
	}
	name, ok := formationFromRemote(string(out))
	if !ok {
		return "", fmt.Errorf("the deis git remote %q names no formation: pass -f NAME or fix the remote with git remote set-url deis ssh://git@HOST:PORT/NAME.git", strings.TrimSpace(string(out)))
	}
	return name, nil
}

// formationFromRemote takes the formation out of a git remote URL: the last
// path element without ".git" (ssh://git@host:2222/hello.git, git@host:hello.git).
func formationFromRemote(url string) (string, bool) {
	u := strings.TrimRight(strings.TrimSpace(url), "/")
	if i := strings.LastIndexAny(u, "/:"); i >= 0 {
		u = u[i+1:]
	}
	u = strings.TrimSuffix(u, ".git")
	if state.ValidateName("formation", u) != nil {
		return "", false
	}
	return u, true
}

// coordinatorEndpoints is where users reach the platform: the git remote of
// a formation and its URL.
type coordinatorEndpoints struct {
	info       state.CoordinatorInfo
	registered bool
}

// Defaults shown before the coordinator has registered; they are the
// coordinator's own flag defaults.
const (
	defaultSSHHost    = "localhost"
	defaultSSHPort    = 2222
	defaultBaseDomain = "localhost"
	defaultHTTPPort   = 8080
	defaultHTTPSPort  = 8443
)

func readCoordinator(ctx context.Context, s *state.Store) (coordinatorEndpoints, error) {
	var info state.CoordinatorInfo
	_, err := s.Get(ctx, s.Keys.Coordinator(), &info)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return coordinatorEndpoints{info: state.CoordinatorInfo{SSHHost: defaultSSHHost, SSHPort: defaultSSHPort,
			BaseDomain: defaultBaseDomain, HTTPPort: defaultHTTPPort, HTTPSPort: defaultHTTPSPort}}, nil
	case err != nil:
		return coordinatorEndpoints{}, err
	}
	if info.SSHHost == "" {
		info.SSHHost = defaultSSHHost
	}
	if info.SSHPort == 0 {
		info.SSHPort = defaultSSHPort
	}
	if info.BaseDomain == "" {
		info.BaseDomain = defaultBaseDomain
	}
	return coordinatorEndpoints{info: info, registered: true}, nil
}

// gitRemote is the URL to push formation f to.
func (ce coordinatorEndpoints) gitRemote(f string) string {
	return fmt.Sprintf("ssh://git@%s:%d/%s.git", ce.info.SSHHost, ce.info.SSHPort, f)
}

// url is where formation f answers; baseDomain overrides the coordinator's.
// Port 80 (or none advertised) is left out.
func (ce coordinatorEndpoints) url(f, baseDomain string) string {
	if baseDomain == "" {
		baseDomain = ce.info.BaseDomain
	}
	if ce.info.HTTPPort == 0 || ce.info.HTTPPort == 80 {
		return fmt.Sprintf("http://%s.%s/", f, baseDomain)
	}
	return fmt.Sprintf("http://%s.%s:%d/", f, baseDomain, ce.info.HTTPPort)
}

// httpsURL is where formation f answers over HTTPS, "" when the
// coordinator advertises no HTTPS port; baseDomain overrides the
// coordinator's. Port 443 is left out.
func (ce coordinatorEndpoints) httpsURL(f, baseDomain string) string {
	if ce.info.HTTPSPort == 0 {
		return ""
	}
	if baseDomain == "" {
		baseDomain = ce.info.BaseDomain
	}
	if ce.info.HTTPSPort == 443 {
		return fmt.Sprintf("https://%s.%s/", f, baseDomain)
	}
	return fmt.Sprintf("https://%s.%s:%d/", f, baseDomain, ce.info.HTTPSPort)
}

// withHTTPS drops the advertised HTTPS port when the proxies serve no
// HTTPS: some proxy node registered, and none with an HTTPS port (its
// agent's --https-listen is empty). Before any proxy registered it is
// kept: the agents' default serves HTTPS.
func (ce coordinatorEndpoints) withHTTPS(ctx context.Context, s *state.Store) (coordinatorEndpoints, error) {
	if ce.info.HTTPSPort == 0 {
		return ce, nil
	}
	nodes, _, err := state.List[state.Node](ctx, s.KV, s.Keys.Nodes())
	if err != nil {
		return ce, err
	}
	proxies := false
	for _, n := range nodes {
		if n.Value.HTTPSPort > 0 {
			return ce, nil
		}
		proxies = proxies || n.Value.HTTPPort > 0
	}
	if proxies {
		ce.info.HTTPSPort = 0
	}
	return ce, nil
}

// requireFormation returns the formation a command acts on (-f or the git
// remote) once it has checked it exists.
func requireFormation(c *cli.Context, e *env) (*state.Formation, error) {
	name, err := formationName(c)
	if err != nil {
		return nil, err
	}
	f, _, err := e.store.GetFormation(c.Context, name)
	return f, err
}

// existingFormation is the name of the formation a command acts on (-f or
// the git remote) once it has checked it exists.
func existingFormation(c *cli.Context, e *env) (string, error) {
	f, err := formationName(c)
	if err != nil {
		return "", err
	}
	if _, _, err := e.store.GetFormation(c.Context, f); err != nil {
		return "", err
	}
	return f, nil
}

// errFormationGone is what a guarded update returns when the formation was
// destroyed between the first read and the write.
func errFormationGone(f string) error {
	return fmt.Errorf("formation %q not found: create it with deisctl formations:create %s: %w", f, f, state.ErrNotFound)
}
