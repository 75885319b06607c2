package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deis/deis/pkg/backoff"
)

// nginx drives one nginx master process under one prefix.
type nginx struct {
	bin   string
	paths layout
	ctl   *http.Client
}

func newNginx(bin string, paths layout) *nginx {
	sock := paths.control()
	tr := &http.Transport{
		DisableKeepAlives: true, // each poll is a new connection, served by a current worker
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}
	return &nginx{bin: bin, paths: paths, ctl: &http.Client{Transport: tr}}
}

// master returns the pid of the live nginx master of this prefix, or 0. The
// pid file alone is not trusted: the process must be an nginx master started
// with this prefix (pids are reused, and a zombie has no command line).
func (n *nginx) master() int {
	b, err := os.ReadFile(n.paths.pid())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmd, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return 0
	}
	title := strings.ReplaceAll(string(cmd), "\x00", " ") + " "
	if !strings.HasPrefix(title, "nginx: master process") || !strings.Contains(title, " -p "+n.paths.Prefix+" ") {
		return 0
	}
	return pid
}

// args are the flags that tie an nginx command to this prefix.
func (n *nginx) args(conf string) []string {
	return []string{"-p", n.paths.Prefix, "-c", conf, "-e", n.paths.errorLog()}
}

// test runs `nginx -t` on a config file.
func (n *nginx) test(ctx context.Context, conf string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, n.bin, append([]string{"-t", "-q"}, n.args(conf)...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("proxy: nginx rejected the new config, the last good one keeps serving: %s", clip(out, err))
	}
	return nil
}

// start starts a master for the installed config. It returns once nginx
// has daemonised.
func (n *nginx) start(ctx context.Context) error {
	// A master that was killed leaves its workers holding the ports, and
	// its control socket, which nginx will not bind over. No master is alive
	// when start is called.
	if orphans := n.orphans(); len(orphans) > 0 {
		for _, pid := range orphans {
			_ = syscall.Kill(pid, syscall.SIGQUIT)
		}
		if err := n.waitRetired(ctx, orphans, 10*time.Second); err != nil {
			return err
		}
	}
	if err := os.Remove(n.paths.control()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("proxy: remove stale control socket: %w", err)
	}
	out, err := os.CreateTemp(n.paths.Prefix, "start-*.out")
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin, n.args(n.paths.conf())...)
	// A file, not a pipe: the daemon may keep the descriptors it inherited.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // not killed with the agent's process group
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("proxy: start nginx: %s; see %s", clip(b, err), n.paths.errorLog())
	}
	return nil
}

// reload asks the master to load the installed config.
func (n *nginx) reload(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("proxy: reload nginx (pid %d): %w", pid, err)
	}
	return nil
}

// call sends one request to the control server and returns its status and
// body.
func (n *nginx) call(ctx context.Context, method, path string, body []byte) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://nginx"+path, rd)
	if err != nil {
		return 0, "", err
	}
	resp, err := n.ctl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// liveHash asks the control server for the hash of the config it serves.
func (n *nginx) liveHash(ctx context.Context) (string, error) {
	code, body, err := n.call(ctx, http.MethodGet, "/config", nil)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("control server answered %d", code)
	}
	return body, nil
}

// routesVersion asks the control server for the version of the routes
// nginx serves ("" when it holds none).
func (n *nginx) routesVersion(ctx context.Context) (string, error) {
	code, body, err := n.call(ctx, http.MethodGet, "/routes", nil)
	if err != nil {
		return "", fmt.Errorf("proxy: ask nginx for its routes: %w; see %s", err, n.paths.errorLog())
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("proxy: ask nginx for its routes: control server answered %d %q; see %s", code, clip([]byte(body), nil), n.paths.errorLog())
	}
	return body, nil
}

// putRoutes makes nginx route by the routes text. When it returns nil,
// every request nginx reads from then on is routed by it.
func (n *nginx) putRoutes(ctx context.Context, table []byte, version string) error {
	code, body, err := n.call(ctx, http.MethodPut, "/routes", table)
	if err != nil {
		return fmt.Errorf("proxy: push routes to nginx: %w; see %s", err, n.paths.errorLog())
	}
	if code != http.StatusOK || body != version {
		return fmt.Errorf("proxy: nginx refused the routes (%d %q); see %s", code, clip([]byte(body), nil), n.paths.errorLog())
	}
	return nil
}

// drain makes nginx close each client connection after its next response,
// for d, so clients stop reusing them before a reload closes the idle ones.
func (n *nginx) drain(ctx context.Context, d time.Duration) error {
	secs := strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
	code, _, err := n.call(ctx, http.MethodPut, "/drain?seconds="+secs, nil)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("control server answered %d", code)
	}
	return err
}

// undrain ends a drain.
func (n *nginx) undrain(ctx context.Context) error {
	code, _, err := n.call(ctx, http.MethodDelete, "/drain", nil)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("control server answered %d", code)
	}
	return err
}

// waitHash polls the control server until it answers hash, the master
// dies, or timeout passes.
func (n *nginx) waitHash(ctx context.Context, hash string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: 500 * time.Millisecond}
	var last string
	var lastErr error
	for {
		got, err := n.liveHash(ctx)
		if err == nil && got == hash {
			return nil
		}
		last, lastErr = got, err
		if n.master() == 0 {
			return fmt.Errorf("proxy: nginx exited instead of loading the new config; see %s", n.paths.errorLog())
		}
		if bo.Wait(ctx) != nil {
			why := "it still serves config " + last
			if lastErr != nil {
				why = "its control socket does not answer: " + lastErr.Error()
			}
			return fmt.Errorf("proxy: nginx did not load the new config within %s (%s); see %s", timeout, why, n.paths.errorLog())
		}
	}
}

// procs lists the processes whose title starts with "nginx: worker
// process" and that still accept connections (a worker told to quit
// retitles itself "worker process is shutting down" right before it closes
// its listening sockets), for which keep(pid, ppid) holds.
func procs(keep func(pid, ppid int) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		title := strings.ReplaceAll(string(cmd), "\x00", " ")
		if !strings.HasPrefix(title, "nginx: worker process") || strings.Contains(title, "shutting down") {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if keep(pid, ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// workers returns the pids of the master's workers that still accept
// connections.
func workers(master int) []int {
	return procs(func(_, ppid int) bool { return ppid == master })
}

// orphans returns workers of this prefix whose master is gone (killed
// hard): they still hold the listening ports. They are recognised by an
// open descriptor on this prefix's error log and a parent that is no nginx
// master.
func (n *nginx) orphans() []int {
	return procs(func(pid, ppid int) bool {
		if parent, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/cmdline"); err == nil && strings.HasPrefix(string(parent), "nginx: master process") {
			return false // its master lives
		}
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			return false
		}
		for _, fd := range fds {
			if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && target == n.paths.errorLog() {
				return true
			}
		}
		return false
	})
}

// waitRetired waits until none of old accepts connections any more, so a
// request sent after an ack never reaches a worker of the previous config.
func (n *nginx) waitRetired(ctx context.Context, old []int, timeout time.Duration) error {
	if len(old) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	for {
		left := map[int]bool{}
		for _, w := range procs(func(int, int) bool { return true }) {
			left[w] = true
		}
		busy := 0
		for _, w := range old {
			if left[w] {
				busy++
			}
		}
		if busy == 0 {
			return nil
		}
		if bo.Wait(ctx) != nil {
			return fmt.Errorf("proxy: %d nginx workers of the previous config still accept connections after %s; see %s", busy, timeout, n.paths.errorLog())
		}
	}
}

// stop quits the master gracefully and waits until it is gone; when ctx
// ends first it falls back to a fast shutdown.
func (n *nginx) stop(ctx context.Context) error {
	pid := n.master()
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		return fmt.Errorf("proxy: stop nginx (pid %d): %w", pid, err)
	}
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: 500 * time.Millisecond}
	for n.master() == pid {
		if bo.Wait(ctx) != nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			return fmt.Errorf("proxy: nginx (pid %d) did not quit in time; sent SIGTERM: %w", pid, ctx.Err())
		}
	}
	return nil
}

// clip shortens command output for an error message.
func clip(out []byte, err error) string {
	s := strings.TrimSpace(string(out))
	s = strings.ReplaceAll(s, "\n", "; ")
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	if s == "" {
		return err.Error()
	}
	return s
}
