package launcher

import (
	"slices"
	"testing"
)

func TestNeedsShell(t *testing.T) {
	for _, c := range []struct {
		cmd, construct string
	}{
		{"/app", ""},                                          // a plain binary
		{"bin/server --port 5000 -v", ""},                     // words and flags
		{"exec /app -addr=:5000", ""},                         // exec is dropped by Split
		{"./migrate && ./server", "&&"},                       // a command list
		{"a || b", "||"},                                      // or-list
		{"server | tee log", "a pipe (|)"},                    // a pipe
		{"a; b", "a command list (;)"},                        // sequence
		{"server &", "a background job (&)"},                  // background
		{"server --port $PORT", "$VAR expansion"},             // expansion
		{"server --port ${PORT}", "$VAR expansion"},           // braced expansion
		{"echo `date`", "command substitution (`)"},           // backticks
		{"server > /tmp/log", "a redirect (>)"},               // redirect out
		{"server < in", "a redirect (<)"},                     // redirect in
		{`server --name "a b"`, "quotes"},                     // quotes with spaces
		{"server --name 'x'", "quotes"},                       // single quotes
		{`server a\ b`, "a backslash escape"},                 // escape
		{"cat *.txt", "a glob (*)"},                           // glob
		{"ls file?", "a glob (?)"},                            // glob
		{"ls [ab]", "a glob ([)"},                             // glob
		{"(cd x)", "a subshell ( )"},                          // subshell
		{"ls ~/x", "~ expansion"},                             // tilde
		{"server # comment", "a comment (#)"},                 // comment
		{"FOO=bar server", "a variable assignment (FOO=bar)"}, // env prefix
		{"cd /srv", "the shell builtin cd"},                   // builtin
		{"exec cd /srv", "the shell builtin cd"},              // builtin after exec
		{"server --opt=a=b", ""},                              // = in an argument is fine
		{"", ""},                                              // nothing to run
	} {
		got, needs := NeedsShell(c.cmd)
		if got != c.construct || needs != (c.construct != "") {
			t.Errorf("NeedsShell(%q) = %q, %v; want %q", c.cmd, got, needs, c.construct)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		cmd  string
		want []string
	}{
		{"/app", []string{"/app"}},
		{"  bin/server\t--port 5000  ", []string{"bin/server", "--port", "5000"}},
		{"exec /app -v", []string{"/app", "-v"}}, // exec is what running directly does
		{"exec", []string{"exec"}},               // a lone word is kept
		{"", nil},
		{"   ", nil},
	} {
		if got := Split(c.cmd); !slices.Equal(got, c.want) {
			t.Errorf("Split(%q) = %q, want %q", c.cmd, got, c.want)
		}
	}
}
