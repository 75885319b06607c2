package gitserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		raw, sub, name, err string
	}{
		// what OpenSSH-based git sends for ssh://git@host:port/hello.git
		{raw: "git-receive-pack '/hello.git'", sub: "receive-pack", name: "hello"},
		// scp-style remote git@host:hello.git
		{raw: "git-upload-pack 'hello.git'", sub: "upload-pack", name: "hello"},
		// without quotes or .git
		{raw: "git-receive-pack hello", sub: "receive-pack", name: "hello"},
		{raw: `git-upload-pack "/my-app"`, sub: "upload-pack", name: "my-app"},
		// no command: someone wants a shell
		{raw: "", err: "no shell"},
		// other commands, even git ones
		{raw: "ls -la", err: `command "ls" is not allowed`},
		{raw: "git-upload-archive 'hello.git'", err: "not allowed"},
		{raw: "bash -c 'git-receive-pack hello'", err: "not allowed"},
		// names that are not formation names
		{raw: "git-receive-pack '../x.git'", err: "invalid repository name"},
		{raw: "git-receive-pack '/a/b.git'", err: "invalid repository name"},
		{raw: "git-receive-pack 'Hello.git'", err: "invalid repository name"},
		{raw: "git-receive-pack 'x'; rm -rf /'", err: "invalid repository name"},
		{raw: "git-receive-pack", err: "needs a repository"},
	} {
		sub, name, err := parseCommand(tc.raw)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseCommand(%q) err = %v, want %q", tc.raw, err, tc.err)
			}
			continue
		}
		if err != nil || sub != tc.sub || name != tc.name {
			t.Errorf("parseCommand(%q) = %q, %q, %v; want %q, %q", tc.raw, sub, name, err, tc.sub, tc.name)
		}
	}
}

// The hook script must hand every argument to the program unchanged, however
// odd the path.
func TestHookScriptQuotes(t *testing.T) {
	dir := t.TempDir()
	argv := []string{"/bin/echo", "it's", "a b", `$HOME`, "`id`", `"q"`, `back\slash`}
	path := filepath.Join(dir, "hook")
	if err := os.WriteFile(path, []byte(hookScript(argv)), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), strings.Join(argv[1:], " ")+"\n"; got != want {
		t.Fatalf("hook printed %q, want %q", got, want)
	}
}
