package procfile

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// Parse reads a Procfile into process type -> command.
func Parse(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, cmd, ok := strings.Cut(line, ":")
		name, cmd = strings.TrimSpace(name), strings.TrimSpace(cmd)
		if !ok || name == "" {
			return nil, fmt.Errorf("procfile: line %d %q: expected \"type: command\"", n, line)
		}
		if err := state.ValidateProcessType(name); err != nil {
			return nil, fmt.Errorf("procfile: line %d: %w", n, err)
		}
		if cmd == "" {
			return nil, fmt.Errorf("procfile: line %d: process type %q has no command", n, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("procfile: line %d: process type %q defined twice", n, name)
		}
		out[name] = cmd
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("procfile: %w", err)
	}
	return out, nil
}
