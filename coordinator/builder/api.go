package builder

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// The build API is plain text over HTTP on a unix socket: the git hook posts
// a Request to /build and copies the response to the pusher line by line.
// The last line is the result: ResultOK followed by " vN", or ResultFailed
// followed by ": reason".
const (
	ResultOK     = "DEIS-BUILD-OK"
	ResultFailed = "DEIS-BUILD-FAILED"
)

// Request asks for a build of one pushed commit.
type Request struct {
	Formation string `json:"formation"`
	// Repo is the absolute path of the bare repository.
	Repo string `json:"repo"`
	SHA  string `json:"sha"`
	// Quarantine is the directory holding the pushed objects while the
	// pre-receive hook runs (git's GIT_QUARANTINE_PATH), if any.
	Quarantine string `json:"quarantine,omitempty"`
	// Incarnation is the formation's incarnation (state.Store.Incarnation)
	// when the push was accepted; 0 means when the build request arrives.
	// The build releases only into that incarnation, never into a
	// formation destroyed and created again with the same name meanwhile.
	Incarnation int64 `json:"incarnation,omitempty"`

	// uid is the formation's uid (state.Formation.AppUID), which the
	// build runs as; the builder reads it from the formation record.
	uid int
}

// Handler serves the build API: POST /build.
func (b *Builder) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /build", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "builder: invalid build request: "+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, err := b.pinIncarnation(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		rel, err := b.build(ctx, req, w)
		if err != nil {
			fmt.Fprintf(w, "%s: %s\n", ResultFailed, oneLine(err.Error()))
		} else {
			fmt.Fprintf(w, "%s v%d\n", ResultOK, rel.Version)
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	})
	return mux
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ListenUnix listens on a unix socket at path that only the owner can use.
// A stale socket left by a dead coordinator is replaced; a live one is an
// error.
func ListenUnix(path string) (net.Listener, error) {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("builder: another coordinator is serving builds on %s: stop it first", path)
	}
	// Bind under a temporary name, restrict it, then move it into place, so
	// the socket is never reachable with looser permissions.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	os.Remove(tmp)
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("builder: listen on %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("builder: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("builder: %w", err)
	}
	return &unixListener{Listener: l, path: path}, nil
}

// unixListener removes its socket file when closed.
type unixListener struct {
	net.Listener
	path string
}

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	os.Remove(l.path)
	return err
}

// RequestBuild posts req to the build API on the unix socket and copies the
// build output to out line by line as it arrives. It returns the released
// version, or an error whose text is the reason the build failed.
func RequestBuild(ctx context.Context, socket string, req Request, out io.Writer) (int, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}}
	defer c.CloseIdleConnections()
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://builder/build", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(hreq)
	if err != nil {
		return 0, fmt.Errorf("builder: the build service at %s is unreachable (is deis-coordinator running?): %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, fmt.Errorf("builder: build service answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, ResultOK+" v"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("builder: bad result line %q", line)
			}
			return n, nil
		}
		if why, ok := strings.CutPrefix(line, ResultFailed+": "); ok {
			return 0, errors.New(why)
		}
		if _, err := io.WriteString(out, line+"\n"); err != nil {
			return 0, err
		}
		if f, ok := out.(interface{ Flush() error }); ok {
			f.Flush()
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("builder: build output interrupted: %w", err)
	}
	return 0, errors.New("builder: the build ended without a result: the coordinator may have stopped; push again")
}
