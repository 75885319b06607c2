package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/pki"
)

// Client calls one agent's API.
type Client struct {
	// URL is the agent's API URL (state.Node.APIURL).
	URL string
	// TLS dials the agent: pki.ClientTLS with the caller's certificate
	// (deisctl's credentials), which the agent checks and authorizes.
	TLS *tls.Config
	// HTTP makes the log requests (default: a client over TLS without a
	// timeout, as followed logs never end).
	HTTP *http.Client
}

// LogsQuery selects the lines of GET /logs.
type LogsQuery struct {
	Formation string
	// Type, when set, keeps only the containers of one process type.
	Type string
	// Tail is how many of the last lines to send (0: none; the server
	// caps it).
	Tail int
	// Follow keeps the stream open: after the backlog comes a line with
	// Mark MarkLive, then new lines as they are written.
	Follow bool
	// Since, when set, keeps only the lines after it.
	Since time.Time
}

// Logs requests the logs of q and calls fn with each line (including the
// MarkLive line of a followed stream) until the stream ends, ctx ends
// (then it returns ctx's error) or fn returns an error.
func (c *Client) Logs(ctx context.Context, q LogsQuery, fn func(LogLine) error) error {
	v := url.Values{"formation": {q.Formation}, "tail": {strconv.Itoa(q.Tail)}}
	if q.Type != "" {
		v.Set("type", q.Type)
	}
	if q.Follow {
		v.Set("follow", "1")
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.URL, "/")+"/logs?"+v.Encode(), nil)
	if err != nil {
		return fmt.Errorf("api: agent URL %q: %w", c.URL, err)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLS, Proxy: http.ProxyFromEnvironment}}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("api: GET logs from %s: %w", c.URL, pki.Explain(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return responseError(resp, c.URL)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l LogLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("api: read logs from %s: %w", c.URL, err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
}

// responseError turns an error response into an error with the server's
// message.
func responseError(resp *http.Response, from string) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return &HTTPError{Code: resp.StatusCode, Msg: msg, URL: from}
}

// HTTPError is an error answer of an agent.
type HTTPError struct {
	Code int
	Msg  string
	URL  string
}

func (e *HTTPError) Error() string { return e.Msg }

// Run runs command in a one-off container of formation f on the agent:
// stdin is sent (then the connection is half-closed; nil sends nothing),
// the container's stdout and stderr are written to stdout and stderr, and
// Run returns the container's exit status. When ctx ends the connection is
// closed, which kills the container.
func (c *Client) Run(ctx context.Context, f string, req RunRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return 0, fmt.Errorf("api: agent URL %q is not an https:// URL", c.URL)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	d := tls.Dialer{Config: c.TLS}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return 0, fmt.Errorf("api: connect to the agent at %s: %w", c.URL, pki.Explain(err))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	hr, err := http.NewRequest(http.MethodPost, strings.TrimRight(c.URL, "/")+"/run?"+url.Values{"formation": {f}}.Encode(), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", UpgradeProtocol)
	if err := hr.Write(conn); err != nil {
		return 0, c.connErr(ctx, "send the request", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hr)
	if err != nil {
		return 0, c.connErr(ctx, "read the answer", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return 0, responseError(resp, c.URL)
	}

	go func() {
		if stdin != nil {
			_, _ = io.Copy(conn, stdin)
		}
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	code, err := readFrames(br, stdout, stderr)
	if err != nil {
		return 0, c.connErr(ctx, "relay the command's output", err)
	}
	return code, nil
}

func (c *Client) connErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("api: %s (agent at %s): %w", what, c.URL, pki.Explain(err))
}
