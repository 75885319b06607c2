package builder

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// parseDefaultProcessTypes reads the default_process_types of a buildpack's
// bin/release output. It understands the subset of YAML buildpacks print:
//
//	---
//	addons: []
//	default_process_types:
//	  web: python3 server.py
//	  worker: "python3 worker.py"
//
// and the empty forms "default_process_types: {}" and "--- {}".
func parseDefaultProcessTypes(yml string) (map[string]string, error) {
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(yml))
	n := 0
	for sc.Scan() {
		n++
		raw := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indented := raw[0] == ' ' || raw[0] == '\t'
		if !indented {
			key, rest, ok := strings.Cut(trimmed, ":")
			in = ok && key == "default_process_types"
			if in {
				switch rest = strings.TrimSpace(rest); rest {
				case "", "{}", "~", "null":
				default:
					return nil, fmt.Errorf("release.yml line %d: default_process_types must be a block of \"name: command\" lines", n)
				}
			}
			continue
		}
		if !in {
			continue
		}
		name, cmd, ok := strings.Cut(trimmed, ":")
		name, cmd = unquote(strings.TrimSpace(name)), unquote(strings.TrimSpace(cmd))
		if !ok || cmd == "" {
			return nil, fmt.Errorf("release.yml line %d %q: expected \"name: command\"", n, trimmed)
		}
		if err := state.ValidateProcessType(name); err != nil {
			return nil, fmt.Errorf("release.yml line %d: %w", n, err)
		}
		out[name] = cmd
	}
	return out, sc.Err()
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		inner := s[1 : len(s)-1]
		if s[0] == '"' {
			inner = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(inner)
		} else {
			inner = strings.ReplaceAll(inner, "''", "'")
		}
		return inner
	}
	return s
}
