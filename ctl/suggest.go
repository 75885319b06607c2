package ctl

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// suggest returns the command names closest to a mistyped one: every name
// the input is a prefix or topic of ("formations" -> formations:create, ...),
// otherwise the names within a small edit distance, closest first.
func suggest(names []string, typed string) []string {
	if typed == "" {
		return nil
	}
	var topic []string
	for _, n := range names {
		if strings.HasPrefix(n, typed+":") {
			topic = append(topic, n)
		}
	}
	if len(topic) > 0 {
		sort.Strings(topic)
		return topic
	}
	limit := len(typed) / 3
	if limit < 2 {
		limit = 2
	}
	best, out := limit+1, []string(nil)
	for _, n := range names {
		d := levenshtein(strings.ToLower(typed), n)
		switch {
		case d < best:
			best, out = d, []string{n}
		case d == best:
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// levenshtein is the number of single-rune insertions, deletions and
// substitutions that turn a into b.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// unknownFlag says a flag is not one of cmd's (cmd "" for the global
// flags), with the closest names as a suggestion.
func unknownFlag(typed, cmd string, flags []cli.Flag) error {
	var names []string
	for _, f := range flags {
		for _, n := range f.Names() {
			if len(n) > 1 {
				names = append(names, n)
			}
		}
	}
	help := "deisctl --help"
	where := "deisctl"
	if cmd != "" {
		help, where = "deisctl "+cmd+" --help", cmd
	}
	msg := fmt.Sprintf("unknown flag %s for %s", typed, where)
	if s := suggest(names, strings.TrimLeft(typed, "-")); len(s) > 0 {
		msg += ": did you mean --" + strings.Join(s, " or --") + "?"
	}
	return fmt.Errorf("%s (see %s)", msg, help)
}

// usageErr turns urfave's flag parsing errors into ones with a suggestion.
func usageErr(err error, cmd string, flags []cli.Flag) error {
	const undefined = "flag provided but not defined: "
	if msg := err.Error(); strings.HasPrefix(msg, undefined) {
		return unknownFlag(strings.TrimPrefix(msg, undefined), cmd, flags)
	}
	return err
}
