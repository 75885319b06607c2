package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/pkg/stdcopy"
)

// Limits of GET /logs.
const (
	defaultTail = 100
	maxTail     = 100000
	maxLine     = 64 << 10 // longer lines are cut
)

// logsQuery is the parsed query of GET /logs.
type logsQuery struct {
	formation, typ string
	tail           int
	follow         bool
	since          time.Time // only lines after it; zero: no bound
}

func parseLogsQuery(v url.Values) (logsQuery, error) {
	q := logsQuery{formation: v.Get("formation"), typ: v.Get("type"), tail: defaultTail}
	if err := state.ValidateName("formation", q.formation); err != nil {
		return q, err
	}
	if q.typ != "" {
		if err := state.ValidateProcessType(q.typ); err != nil {
			return q, err
		}
	}
	if t := v.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return q, fmt.Errorf("invalid tail %q: use a number of lines", t)
		}
		q.tail = min(n, maxTail)
	}
	switch f := v.Get("follow"); f {
	case "", "0", "false":
	case "1", "true":
		q.follow = true
	default:
		return q, fmt.Errorf("invalid follow %q: use 1 or 0", f)
	}
	if s := v.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, fmt.Errorf("invalid since %q: use an RFC 3339 time", s)
		}
		q.since = t
	}
	return q, nil
}

// dockerTime formats t the way Docker's since and until parameters take it.
func dockerTime(t time.Time) string { return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()) }

// logs answers GET /logs: the output of this node's containers of a
// formation, oldest first, as JSON lines. With follow=1 the backlog ends
// with a MarkLive object and new lines follow, of the containers running
// and of those that start later, until the client leaves.
//
// It only talks to Docker: no lock of the reconcile loop is taken.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	q, err := parseLogsQuery(r.URL.Query())
	if err != nil {
		httpError(w, http.StatusBadRequest, "api: %v", err)
		return
	}
	s.m.logStreams.Inc()
	defer s.m.logStreams.Dec()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	args := filters.NewArgs(filters.Arg("label", runtime.LabelNode+"="+s.cfg.Node),
		filters.Arg("label", runtime.LabelFormation+"="+q.formation))
	if q.typ != "" {
		args.Add("label", runtime.LabelType+"="+q.typ)
	}
	t0 := time.Now()
	// Subscribe before listing, so that no container starting meanwhile
	// is missed.
	var evs <-chan events.Message
	var evErrs <-chan error
	if q.follow {
		evs, evErrs = s.subscribe(ctx, args, t0)
	}
	lctx, lcancel := context.WithTimeout(ctx, dockerTimeout)
	cs, err := s.cfg.Docker.ContainerList(lctx, container.ListOptions{All: true, Filters: args})
	lcancel()
	if err != nil {
		httpError(w, http.StatusBadGateway, "api: list the containers of %s: %v: check that Docker is running on node %s", q.formation, err, s.cfg.Node)
		return
	}

	// The backlog: the last lines of every container up to t0, merged.
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Tail: strconv.Itoa(q.tail)}
	if !q.since.IsZero() {
		opts.Since = dockerTime(q.since.Add(time.Nanosecond))
	}
	if q.follow {
		opts.Until = dockerTime(t0)
	}
	var (
		mu      sync.Mutex
		backlog []LogLine
		wg      sync.WaitGroup
	)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bctx, bcancel := context.WithTimeout(ctx, dockerTimeout)
			defer bcancel()
			var mine []LogLine
			_, err := s.read(bctx, c.ID, containerName(c.Labels, c.Names), opts, func(l LogLine) bool {
				mine = append(mine, l)
				return true
			})
			if err != nil && !cerrdefs.IsNotFound(err) && ctx.Err() == nil {
				s.log.Warn("read container logs", "formation", q.formation, "container", shortID(c.ID), "error", err)
			}
			mu.Lock()
			backlog = append(backlog, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	backlog = append(backlog, s.retired(q, cs, t0)...)
	sort.SliceStable(backlog, func(i, j int) bool { return backlog[i].Time.Before(backlog[j].Time) })
	if len(backlog) > q.tail {
		backlog = backlog[len(backlog)-q.tail:]
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for _, l := range backlog {
		if enc.Encode(l) != nil {
			return
		}
	}
	if !q.follow {
		return
	}
	if enc.Encode(LogLine{Mark: MarkLive}) != nil || flush(rc) != nil {
		return
	}
	since := t0
	if q.since.After(since) {
		since = q.since
	}
	s.follow(ctx, q, args, cs, since, evs, evErrs, func(l LogLine) error { return enc.Encode(l) }, func() error { return flush(rc) })
}

// retired returns the kept lines of the formation's removed containers
// that match q, up to t0, leaving out containers still listed (cs): their
// lines are read from Docker.
func (s *Server) retired(q logsQuery, cs []container.Summary, t0 time.Time) []LogLine {
	if s.cfg.Retired == nil {
		return nil
	}
	listed := map[string]bool{}
	for _, c := range cs {
		listed[c.ID] = true
	}
	var out []LogLine
	for _, l := range s.cfg.Retired.RetiredLines(q.formation) {
		if listed[l.ID] || (q.typ != "" && l.Type != q.typ) || !l.Time.After(q.since) || l.Time.After(t0) {
			continue
		}
		out = append(out, LogLine{Time: l.Time, Container: l.Container, Node: s.cfg.Node, Stream: l.Stream,
			Line: l.Line, Release: l.Release, Retired: true})
	}
	if len(out) > q.tail {
		out = out[len(out)-q.tail:]
	}
	return out
}

func flush(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// subscribe watches for the start of containers matching args, from since.
func (s *Server) subscribe(ctx context.Context, args filters.Args, since time.Time) (<-chan events.Message, <-chan error) {
	ea := args.Clone()
	ea.Add("type", string(events.ContainerEventType))
	ea.Add("event", string(events.ActionStart))
	return s.cfg.Docker.Events(ctx, events.ListOptions{Since: dockerTime(since), Filters: ea})
}

// followed is one container being followed.
type followed struct {
	name   string
	active bool
	again  bool      // it started again while its stream was still open
	after  time.Time // lines after this one are new
}

// ended is a follower's end.
type ended struct {
	id   string
	last time.Time // the time of its last line, zero if none
}

// follow streams the new lines (after since) of the containers cs and of
// the containers that start later, until ctx ends or send fails.
func (s *Server) follow(ctx context.Context, q logsQuery, args filters.Args, cs []container.Summary, since time.Time,
	evs <-chan events.Message, evErrs <-chan error, send func(LogLine) error, flushOut func() error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	lines := make(chan LogLine, 256)
	ends := make(chan ended)
	fs := map[string]*followed{}
	start := func(id, name string) {
		f := fs[id]
		if f == nil {
			f = &followed{name: name, after: since}
			fs[id] = f
		}
		if f.active {
			f.again = true
			return
		}
		f.active = true
		opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: true,
			Since: dockerTime(f.after.Add(time.Nanosecond))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			last, err := s.read(ctx, id, f.name, opts, func(l LogLine) bool {
				select {
				case lines <- l:
					return true
				case <-ctx.Done():
					return false
				}
			})
			if err != nil && !cerrdefs.IsNotFound(err) && ctx.Err() == nil {
				s.log.Warn("follow container logs", "formation", q.formation, "container", shortID(id), "error", err)
			}
			select {
			case ends <- ended{id: id, last: last}:
			case <-ctx.Done():
			}
		}()
	}
	for _, c := range cs {
		start(c.ID, containerName(c.Labels, c.Names))
	}

	bo := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	var resubscribe <-chan time.Time
	lastEvent := since
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-lines:
			if send(l) != nil {
				return
			}
			for more := true; more; { // send what else is there, then flush once
				select {
				case l := <-lines:
					if send(l) != nil {
						return
					}
				default:
					more = false
				}
			}
			if flushOut() != nil {
				return
			}
		case e := <-ends:
			f := fs[e.id]
			f.active = false
			if e.last.After(f.after) {
				f.after = e.last
			}
			if f.again {
				f.again = false
				start(e.id, f.name)
			}
		case ev, ok := <-evs:
			if !ok {
				evs = nil
				continue
			}
			bo.Reset()
			if t := time.Unix(0, ev.TimeNano); t.After(lastEvent) {
				lastEvent = t
			}
			start(ev.Actor.ID, containerName(ev.Actor.Attributes, []string{ev.Actor.Attributes["name"]}))
		case err := <-evErrs:
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			s.log.Warn("docker events stream ended, subscribing again", "formation", q.formation, "error", err, "retry_in", d)
			evs, evErrs = nil, nil
			resubscribe = time.After(d)
		case <-resubscribe:
			resubscribe = nil
			evs, evErrs = s.subscribe(ctx, args, lastEvent)
		}
	}
}

// read reads the logs of container id with opts and calls emit with each
// line until the stream ends or emit returns false; it returns the time of
// the last line.
func (s *Server) read(ctx context.Context, id, name string, opts container.LogsOptions, emit func(LogLine) bool) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := s.cfg.Docker.ContainerLogs(ctx, id, opts)
	if err != nil {
		return time.Time{}, err
	}
	defer rc.Close()
	var last time.Time
	stopped := false
	out := func(stream string) *runtime.LineSplitter {
		return &runtime.LineSplitter{Max: maxLine, Emit: func(raw []byte) {
			if stopped {
				return
			}
			l := parseLine(raw, last)
			l.Container, l.Node, l.Stream = name, s.cfg.Node, stream
			last = l.Time
			if !emit(l) {
				stopped = true
				cancel()
			}
		}}
	}
	stdout, stderr := out("stdout"), out("stderr")
	_, err = stdcopy.StdCopy(stdout, stderr, rc)
	stdout.Flush()
	stderr.Flush()
	if stopped || ctx.Err() != nil {
		return last, nil
	}
	return last, err
}

// parseLine splits a timestamped Docker log line; a line without a
// readable timestamp gets prev.
func parseLine(raw []byte, prev time.Time) LogLine {
	l := LogLine{Time: prev}
	ts, rest, ok := bytes.Cut(raw, []byte(" "))
	if t, err := time.Parse(time.RFC3339Nano, string(ts)); ok && err == nil {
		l.Time, raw = t, rest
	}
	l.Line = strings.TrimRight(string(raw), "\r")
	return l
}

// containerName is the spec name of a container from its labels, or its
// Docker name.
func containerName(labels map[string]string, names []string) string {
	if n := labels[runtime.LabelName]; n != "" {
		return n
	}
	for _, n := range names {
		if n != "" {
			return strings.TrimPrefix(n, "/")
		}
	}
	return "?"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
