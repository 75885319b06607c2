package gitserver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// errNoShell is the answer to a session without a command.
var errNoShell = errors.New("this server has no shell: it only serves git push and git fetch, e.g. git push ssh://git@HOST:PORT/NAME.git main")

// gitCommands maps the commands git clients send to git's subcommands.
var gitCommands = map[string]string{
	"git-receive-pack": "receive-pack",
	"git-upload-pack":  "upload-pack",
}

// parseCommand checks a session's command line and returns the git
// subcommand to run and the repository (formation) name.
func parseCommand(raw string) (sub, name string, err error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", "", errNoShell
	}
	verb, arg, _ := strings.Cut(raw, " ")
	sub, ok := gitCommands[verb]
	if !ok {
		return "", "", fmt.Errorf("command %q is not allowed: this server only serves git push and git fetch (git-receive-pack and git-upload-pack)", verb)
	}
	arg = strings.TrimSpace(arg)
	if len(arg) >= 2 && (arg[0] == '\'' && arg[len(arg)-1] == '\'' || arg[0] == '"' && arg[len(arg)-1] == '"') {
		arg = arg[1 : len(arg)-1]
	}
	name = strings.TrimPrefix(arg, "/")
	name = strings.TrimSuffix(name, "/")
	name = strings.TrimSuffix(name, ".git")
	if name == "" {
		return "", "", fmt.Errorf("%s needs a repository: use ssh://git@HOST:PORT/NAME.git", verb)
	}
	if err := state.ValidateName("repository", name); err != nil {
		return "", "", fmt.Errorf("%w: the repository is the formation's name, as in NAME.git", err)
	}
	return sub, name, nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// hookScript is the pre-receive hook that execs argv.
func hookScript(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return "#!/bin/sh\n# Written by deis-coordinator before every push; local changes are overwritten.\nexec " +
		strings.Join(quoted, " ") + "\n"
}
