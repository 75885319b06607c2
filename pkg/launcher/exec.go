package launcher

import (
	"strings"
	"unicode"
)

// NeedsShell reports whether the command line cmd needs a shell to mean
// what it says, and names the first construct that does ("&&", "|",
// "$VAR expansion", ...). A command that needs none runs the same way when
// Split into words and executed directly, which is how a process of an
// image without /bin/sh runs. It is conservative: quotes and backslashes
// count as shell syntax, since only a shell removes them.
func NeedsShell(cmd string) (construct string, needs bool) {
	if strings.TrimSpace(cmd) == "" {
		return "", false
	}
	for _, op := range []struct{ s, name string }{
		{"&&", "&&"}, {"||", "||"}, {"|", "a pipe (|)"}, {";", "a command list (;)"},
		{"&", "a background job (&)"}, {"$", "$VAR expansion"}, {"`", "command substitution (`)"},
		{">", "a redirect (>)"}, {"<", "a redirect (<)"}, {"'", "quotes"}, {`"`, "quotes"},
		{`\`, "a backslash escape"}, {"*", "a glob (*)"}, {"?", "a glob (?)"}, {"[", "a glob ([)"},
		{"(", "a subshell ( )"}, {")", "a subshell ( )"}, {"\n", "several lines"},
	} {
		if strings.Contains(cmd, op.s) {
			return op.name, true
		}
	}
	words := strings.FieldsFunc(cmd, unicode.IsSpace)
	for _, w := range words {
		switch {
		case strings.HasPrefix(w, "~"):
			return "~ expansion", true
		case strings.HasPrefix(w, "#"):
			return "a comment (#)", true
		}
	}
	first := words[0]
	if first == "exec" && len(words) > 1 {
		first = words[1] // Split drops a leading exec
	}
	if strings.Contains(first, "=") {
		return "a variable assignment (" + first + ")", true
	}
	if shellWords[first] {
		return "the shell builtin " + first, true
	}
	return "", false
}

// shellWords are builtins and keywords that exist only in a shell.
var shellWords = map[string]bool{
	"cd": true, "export": true, "source": true, ".": true, "set": true, "unset": true,
	"ulimit": true, "umask": true, "eval": true, "trap": true, "exec": true, "if": true,
	"for": true, "while": true, "until": true, "case": true, "!": true, "{": true, "alias": true,
}

// Split splits a command line that does not need a shell (see NeedsShell)
// into the words of its argv, as a shell would; a leading "exec", which
// asks a shell to do what running directly does, is dropped. It returns
// nil for an empty command.
func Split(cmd string) []string {
	words := strings.FieldsFunc(cmd, unicode.IsSpace)
	if len(words) > 1 && words[0] == "exec" {
		words = words[1:]
	}
	if len(words) == 0 {
		return nil
	}
	return words
}
