package builder

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestListenUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "builder.sock")
	l, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v mode %v, want a socket with mode 0600", err, st.Mode())
	}
	// a live socket is not taken over
	if l2, err := ListenUnix(sock); err == nil {
		l2.Close()
		t.Fatal("second ListenUnix on a live socket succeeded")
	}
	l.Close()

	// a stale socket file (its listener died without cleaning up) is replaced
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket file missing: %v", err)
	}
	l, err = ListenUnix(sock)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()
	l.Close()
}

func TestPrepareWritesEnvDir(t *testing.T) {
	dir := t.TempDir()
	d := buildDirs{env: filepath.Join(dir, "env"), in: filepath.Join(dir, "in")}
	con := newConsole(nil, nil)
	vars := map[string]string{"GREETING": "hi there", "../EVIL": "x", "EMPTY": ""}
	if err := d.prepare(vars, con); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(d.env)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "EMPTY" || names[1] != "GREETING" {
		t.Fatalf("env dir holds %v, want EMPTY and GREETING only", names)
	}
	if b, _ := os.ReadFile(filepath.Join(d.env, "GREETING")); string(b) != "hi there" {
		t.Fatalf("GREETING = %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "EVIL")); err == nil {
		t.Fatal("an invalid key escaped the env dir")
	}
}
