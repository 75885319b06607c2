package builder

import (
	"maps"
	"strings"
	"testing"
)

func TestParseDefaultProcessTypes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]string
		err      string
	}{
		// the procfile buildpack's output: nothing
		{name: "empty document", in: "--- {}\n", want: map[string]string{}},
		{name: "nothing at all", in: "", want: map[string]string{}},
		// Heroku's usual shape, with other keys around it
		{name: "block", in: "---\naddons: []\ndefault_process_types:\n  web: python3 server.py\n  worker: python3 w.py --x=1\nconfig_vars:\n  A: b\n",
			want: map[string]string{"web": "python3 server.py", "worker": "python3 w.py --x=1"}},
		// quoted commands keep their colons and lose their quotes
		{name: "quoted", in: "default_process_types:\n  web: \"gunicorn app:app\"\n  cron: 'it''s'\n",
			want: map[string]string{"web": "gunicorn app:app", "cron": "it's"}},
		// explicit empty map
		{name: "empty map", in: "default_process_types: {}\n", want: map[string]string{}},
		// a flow map is more YAML than we read: say so rather than guess
		{name: "flow map", in: "default_process_types: {web: x}\n", err: "line 1"},
		// a type name the scheduler cannot use
		{name: "bad type", in: "default_process_types:\n  Web Server: x\n", err: "invalid process type"},
		// a type with no command
		{name: "no command", in: "default_process_types:\n  web:\n", err: "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDefaultProcessTypes(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
