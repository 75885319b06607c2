package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// bashCompletion asks deisctl itself for completions (urfave/cli's
// --generate-bash-completion); ':' is kept inside words so colon commands
// complete whole.
const bashCompletion = `# deisctl bash completion. Load with: source <(deisctl completion bash)
_deisctl_complete() {
  local cur words cword
  COMPREPLY=()
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local request=("${words[@]:0:$cword}")
  local opts
  if [[ "$cur" == -* ]]; then
    # A lone "--" would end flag parsing; "-" asks for the flags just as well.
    local flag="$cur"
    [[ "$flag" == "--" ]] && flag="-"
    opts=$("${request[@]}" "$flag" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${request[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  if declare -F __ltrim_colon_completions >/dev/null 2>&1; then
    __ltrim_colon_completions "$cur"
  fi
  return 0
}
complete -o bashdefault -o default -F _deisctl_complete deisctl
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:     "completion",
		Category: "setup",
		Usage:    "print a shell completion script",
		Subcommands: []*cli.Command{{
			Name:  "bash",
			Usage: "print the bash completion script: source <(deisctl completion bash)",
			Action: func(c *cli.Context) error {
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			},
		}},
	}
}
