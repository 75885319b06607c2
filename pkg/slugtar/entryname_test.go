package slugtar

import "testing"

func TestEntryName(t *testing.T) {
	for _, c := range []struct {
		in, want string
		bad      bool
	}{
		{in: "./Procfile", want: "Procfile"},        // builders prefix "./"
		{in: "Procfile", want: "Procfile"},          // or not
		{in: "./bin/../Procfile", want: "Procfile"}, // cleaned
		{in: "./", want: "."},                       // the root
		{in: ".", want: "."},                        // the root, too
		{in: "", want: "."},                         // the root, unnamed
		{in: "/", want: "."},                        // the root, absolute
		{in: "../evil", bad: true},                  // leaves the slug
		{in: "./../evil", bad: true},                // leaves it after the prefix
		{in: "a/../../evil", bad: true},             // leaves it once cleaned
		{in: "/etc/passwd", bad: true},              // absolute
		{in: "..", bad: true},                       // the parent itself
		{in: "./..foo", want: "..foo"},              // a name that merely starts with dots
	} {
		got, err := entryName(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("entryName(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("entryName(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
