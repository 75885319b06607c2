package ctl

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/deis/deis/pkg/pki"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/agent/api"
	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/deis/deis/pkg/watch"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Limits of deisctl logs.
const (
	defaultLogLines = 100
	maxBuildLogs    = 3       // builds whose logs are interleaved
	lateNodeTail    = 10000   // backlog asked of a node that gets containers during --follow
	maxBuildLog     = 4 << 20 // bytes read of one build log
)

func (b *builder) logCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "logs",
			Category: "processes",
			Usage:    "show a formation's output: its containers' lines, releases and builds, merged by time",
			Description: "Each line reads TIME CONTAINER[NODE]: LINE; deis[release] lines are releases, deis[build] lines the\n" +
				"latest builds' output. The lines come straight from each node's agent, never through etcd.",
			Flags: []cli.Flag{formationFlag(),
				&cli.StringFlag{Name: "type", Aliases: []string{"p", "ps"}, Usage: "only the containers of this process type (web, worker, ...)"},
				&cli.IntFlag{Name: "num", Aliases: []string{"n"}, Value: defaultLogLines, Usage: "how many of the last lines to show"},
				&cli.BoolFlag{Name: "follow", Aliases: []string{"tail", "t"}, Usage: "keep printing new lines as they come (stop with Ctrl-C)", DisableDefaultText: true},
			},
		}, logs),
	}
}

// logEntry is one line of deisctl logs.
type logEntry struct {
	time   time.Time
	source string // hello.v3.web.1[node], hello.v2.web.1 (retired)[node], deis[release], deis[build]
	line   string
}

func (e logEntry) String() string {
	return e.time.Local().Format("2006-01-02T15:04:05.000000-07:00") + " " + e.source + ": " + e.line
}

func fromLogLine(l api.LogLine) logEntry {
	name := l.Container
	if l.Retired {
		name += " (retired)" // removed by a rollout, a scale-down or after it exited
	}
	return logEntry{time: l.Time, source: name + "[" + l.Node + "]", line: l.Line}
}

// mergeLast merges entries by time (entries of one time keep their order)
// and keeps the last n.
func mergeLast(entries []logEntry, n int) []logEntry {
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].time.Before(entries[j].time) })
	if len(entries) > n {
		entries = entries[len(entries)-n:]
	}
	return entries
}

// logNode is a node with containers of the formation.
type logNode struct {
	name string
	url  string // its agent API; "" if it advertises none
}

// logNodes returns the nodes that run containers of formation f (of type
// typ, if set): those its runtime databags assign them to, those that
// still report some (being stopped), and those that keep the last lines of
// removed ones.
func logNodes(ctx context.Context, s *state.Store, f, typ string) ([]logNode, error) {
	st, err := view.LoadFamilies(ctx, s.KV, s.Keys.Prefix, view.Runtimes, view.NodeStatuses, view.Nodes)
	if etcdauth.IsPermissionDenied(err) {
		// A user granted f may not read the databags (they hold every
		// formation's containers): ask every live node; an agent with
		// none of f's containers sends no lines.
		return liveLogNodes(ctx, s)
	}
	if err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, c := range st.Containers(f) {
		t := ""
		if c.Spec != nil {
			t = c.Spec.Type
		} else {
			t = c.Status.Type
		}
		if typ == "" || t == typ {
			has[c.Node] = true
		}
	}
	for n, ns := range st.Status {
		if slices.Contains(ns.RetiredLogs, f) { // the last lines of removed containers
			has[n] = true
		}
	}
	var out []logNode
	for _, name := range sortedKeys(has) {
		n := logNode{name: name}
		if node := st.Nodes[name]; node != nil {
			n.url = node.APIURL
		}
		out = append(out, n)
	}
	return out, nil
}

// liveLogNodes is every node with a heartbeat.
func liveLogNodes(ctx context.Context, s *state.Store) ([]logNode, error) {
	st, err := view.LoadFamilies(ctx, s.KV, s.Keys.Prefix, view.Nodes, view.Heartbeats)
	if err != nil {
		return nil, err
	}
	var out []logNode
	for _, name := range sortedKeys(st.Nodes) {
		if st.Alive[name] {
			out = append(out, logNode{name: name, url: st.Nodes[name].APIURL})
		}
	}
	return out, nil
}

// reachable splits nodes into those with an agent API and the names of
// those without.
func reachable(nodes []logNode) (ok []logNode, without []string) {
	for _, n := range nodes {
		if n.url == "" {
			without = append(without, n.name)
		} else {
			ok = append(ok, n)
		}
	}
	return ok, without
}

func logs(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME] [-p TYPE] [-n LINES] [--follow]")
	}
	f, err := formationName(c)
	if err != nil {
		return err
	}
	typ := c.String("type")
	if typ != "" {
		if err := state.ValidateProcessType(typ); err != nil {
			return err
		}
	}
	n := c.Int("num")
	if n < 0 {
		return fmt.Errorf("invalid --num %d: use a number of lines", n)
	}
	ctx := c.Context
	if _, _, err := e.store.GetFormation(ctx, f); err != nil {
		return err
	}
	all, err := logNodes(ctx, e.store, f, typ)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		what := "containers"
		if typ != "" {
			what = typ + " containers"
		}
		scale := "web=1"
		if typ != "" {
			scale = typ + "=1"
		}
		return fmt.Errorf("formation %s has no %s running: scale it with deisctl scale %s -f %s", f, what, scale, f)
	}
	nodes, without := reachable(all)
	if len(without) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "deisctl: node(s) %s advertise no agent API, their lines are left out: run a deis-agent with --api-addr there\n", strings.Join(without, ", "))
	}
	if len(nodes) == 0 {
		return fmt.Errorf("no node running %s serves the agent API: upgrade and restart deis-agent on %s", f, strings.Join(without, ", "))
	}
	tc, err := e.platformTLS()
	if err != nil {
		return err
	}
	l := &logReader{c: c, e: e, f: f, typ: typ, n: n, tls: tc}
	if err := l.allowed(nodes[0]); err != nil {
		return err
	}
	if c.Bool("follow") {
		return l.follow(nodes)
	}
	entries, err := l.fetch(nodes)
	if err != nil {
		return err
	}
	entries, err = l.withEvents(entries)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(c.App.Writer)
	for _, en := range entries {
		fmt.Fprintln(w, en)
	}
	return w.Flush()
}

// allowed asks one node for no lines: an agent that refuses deisctl's
// caller the formation answers with the one line that says so.
func (l *logReader) allowed(n logNode) error {
	cl := &api.Client{URL: n.url, TLS: l.e.nodeTLS(n.name)}
	err := cl.Logs(l.c.Context, api.LogsQuery{Formation: l.f, Type: l.typ}, func(api.LogLine) error { return nil })
	var he *api.HTTPError
	if errors.As(err, &he) && he.Code == http.StatusForbidden {
		return errors.New(he.Msg)
	}
	return nil // other failures: reported per node as the lines are read
}

// logReader reads and prints one formation's logs.
type logReader struct {
	c   *cli.Context
	e   *env
	f   string
	typ string
	n   int
	tls *tls.Config // deisctl's certificate (agent API, build logs)
}

func (l *logReader) warn(format string, args ...any) {
	fmt.Fprintf(l.c.App.ErrWriter, "deisctl: "+format+"\n", args...)
}

// fetch asks every node for its last lines at once.
func (l *logReader) fetch(nodes []logNode) ([]logEntry, error) {
	var (
		mu      sync.Mutex
		entries []logEntry
		failed  []string
		wg      sync.WaitGroup
	)
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &api.Client{URL: n.url, TLS: l.e.nodeTLS(n.name)}
			var mine []logEntry
			err := cl.Logs(l.c.Context, api.LogsQuery{Formation: l.f, Type: l.typ, Tail: l.n}, func(ll api.LogLine) error {
				if ll.Mark == "" {
					mine = append(mine, fromLogLine(ll))
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			entries = append(entries, mine...)
			if err != nil {
				failed = append(failed, n.name)
				l.warn("node %s: %v", n.name, err)
			}
		}()
	}
	wg.Wait()
	if len(failed) == len(nodes) {
		return nil, fmt.Errorf("no node answered with the logs of %s: check that deis-agent runs on %s", l.f, strings.Join(failed, ", "))
	}
	return entries, nil
}

// withEvents adds the release log and the latest builds' output (unless
// a process type was asked for) and keeps the last n entries.
func (l *logReader) withEvents(entries []logEntry) ([]logEntry, error) {
	if l.typ != "" {
		return mergeLast(entries, l.n), nil
	}
	ctx := l.c.Context
	rels, _, err := state.List[state.Release](ctx, l.e.store.KV, l.e.keys().Releases(l.f))
	if err != nil {
		return nil, err
	}
	for _, r := range rels {
		entries = append(entries, releaseEntry(r.Value))
	}
	entries = mergeLast(entries, l.n)
	builds, err := l.buildEntries(entries)
	if err != nil {
		return nil, err
	}
	return mergeLast(append(builds, entries...), l.n), nil
}

func releaseEntry(r state.Release) logEntry {
	return logEntry{time: r.Created, source: "deis[release]", line: fmt.Sprintf("v%d %s", r.Version, r.Description)}
}

// buildEntries reads from the coordinator the logs of the newest build
// and of the other recent builds that fall within the lines shown (at most
// maxBuildLogs). Their lines carry the build's time. A coordinator that
// does not serve build logs is skipped with a warning.
func (l *logReader) buildEntries(shown []logEntry) ([]logEntry, error) {
	ctx := l.c.Context
	ce, err := readCoordinator(ctx, l.e.store)
	if err != nil {
		return nil, err
	}
	if !ce.registered || ce.info.SlugURL == "" {
		return nil, nil
	}
	list, _, err := state.List[state.Build](ctx, l.e.store.KV, l.e.keys().Builds(l.f))
	if err != nil {
		return nil, err
	}
	builds := make([]state.Build, 0, len(list))
	for _, b := range list {
		builds = append(builds, b.Value)
	}
	sort.SliceStable(builds, func(i, j int) bool { return builds[i].Created.After(builds[j].Created) })
	var oldest time.Time
	if len(shown) > 0 && len(shown) >= l.n {
		oldest = shown[0].time
	}
	var out []logEntry
	for i, b := range builds {
		if i >= maxBuildLogs || (i > 0 && b.Created.Before(oldest)) {
			break
		}
		lines, err := l.buildLog(ce.info.SlugURL, b.ID)
		if err != nil {
			l.warn("the build log of %s is left out: %v", b.ID, err)
			continue
		}
		for _, line := range lines {
			out = append(out, logEntry{time: b.Created, source: "deis[build]", line: line})
		}
	}
	return out, nil
}

// buildLog fetches one build's log from the coordinator; a build without a
// log gives no lines.
func (l *logReader) buildLog(base, id string) ([]string, error) {
	url := strings.TrimRight(base, "/") + "/builds/" + l.f + "/" + id + ".log"
	req, err := http.NewRequestWithContext(l.c.Context, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: l.tls, Proxy: http.ProxyFromEnvironment}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, pki.Explain(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	case http.StatusForbidden:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return nil, errors.New(strings.TrimSpace(string(msg)))
	default:
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, maxBuildLog))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, strings.TrimRight(sc.Text(), "\r"))
	}
	return lines, sc.Err()
}

// followMsg is what a node's follower reports.
type followMsg struct {
	node string
	line api.LogLine
	err  error // the stream ended (nil: it will be resumed)
	live bool  // the node's backlog is complete
}

// follow prints the backlog of every node merged with the release log and
// the builds, then the new lines of every node as they come, and new
// releases, until the output fails (a closed pipe) or the process is
// stopped. Nodes that get containers of the formation later are followed
// too; a node whose stream breaks is asked again for the lines after its
// last one.
func (l *logReader) follow(nodes []logNode) error {
	// Following outlives --timeout, which bounds the reads that set it up.
	ctx, cancel := context.WithCancel(context.WithoutCancel(l.c.Context))
	defer cancel()
	msgs := make(chan followMsg, 256)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	followed := map[string]bool{}
	start := func(n logNode, tail int) {
		followed[n.name] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.followNode(ctx, n, tail, msgs)
		}()
	}
	for _, n := range nodes {
		start(n, l.n)
	}

	// Phase 1: every node's backlog (or its failure).
	pending := map[string]bool{}
	for _, n := range nodes {
		pending[n.name] = true
	}
	var backlog []logEntry
	var early []api.LogLine // lines after a node's backlog, while others still send theirs
	for len(pending) > 0 {
		m := <-msgs
		switch {
		case m.err != nil:
			l.warn("node %s: %v", m.node, m.err)
			delete(pending, m.node)
		case m.live:
			delete(pending, m.node)
		case pending[m.node]:
			backlog = append(backlog, fromLogLine(m.line))
		default:
			early = append(early, m.line)
		}
	}
	entries, err := l.withEvents(backlog)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(l.c.App.Writer)
	emit := func(en logEntry) bool {
		fmt.Fprintln(w, en)
		return w.Flush() == nil
	}
	lastRelease := 0
	for _, en := range entries {
		if !emit(en) {
			return nil
		}
	}
	for _, ll := range early {
		if !emit(fromLogLine(ll)) {
			return nil
		}
	}
	rels, rev, err := state.List[state.Release](l.c.Context, l.e.store.KV, l.e.keys().Releases(l.f))
	if err != nil {
		return err
	}
	for _, r := range rels {
		lastRelease = max(lastRelease, r.Value.Version)
	}

	// Phase 2: whatever comes. Changes of the releases and the runtime
	// databags wake a re-read: new releases are printed, nodes newly
	// running the formation are followed.
	wake := watch.NewWaker() // a first re-read covers the changes since the nodes were listed
	watched := []string{l.e.keys().Releases(l.f), l.e.keys().Runtimes()}
	if _, err := l.e.client.Get(ctx, l.e.keys().Runtimes(), clientv3.WithPrefix(), clientv3.WithCountOnly()); etcdauth.IsPermissionDenied(err) {
		// A user granted f: nodes that join are found by their heartbeats.
		watched[1] = l.e.keys().Heartbeats()
	}
	watch.Prefixes(ctx, l.e.client, rev, wake, watched...)
	for {
		select {
		case m := <-msgs:
			switch {
			case m.err != nil:
				l.warn("node %s: %v", m.node, m.err)
			case m.live:
			default:
				if !emit(fromLogLine(m.line)) {
					return nil
				}
			}
		case <-wake:
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			rels, _, err := state.List[state.Release](rctx, l.e.store.KV, l.e.keys().Releases(l.f))
			if err == nil && l.typ == "" {
				for _, r := range rels {
					if r.Value.Version > lastRelease {
						lastRelease = r.Value.Version
						if !emit(releaseEntry(r.Value)) {
							rcancel()
							return nil
						}
					}
				}
			}
			all, err := logNodes(rctx, l.e.store, l.f, l.typ)
			rcancel()
			if err != nil {
				continue // the next change or the watch's resync wakes us again
			}
			for _, n := range all {
				if !followed[n.name] && n.url != "" {
					start(n, lateNodeTail)
				}
			}
		}
	}
}

// followNode follows one node's logs until ctx ends, resuming after the
// last line seen when the stream breaks. Its first stream's backlog ends
// with a live message; an error is reported once per failure streak.
func (l *logReader) followNode(ctx context.Context, n logNode, tail int, msgs chan<- followMsg) {
	send := func(m followMsg) bool {
		m.node = n.name
		select {
		case msgs <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	cl := &api.Client{URL: n.url, TLS: l.e.nodeTLS(n.name)}
	bo := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	var since time.Time
	first, reported := true, false
	for ctx.Err() == nil {
		q := api.LogsQuery{Formation: l.f, Type: l.typ, Tail: tail, Follow: true, Since: since}
		err := cl.Logs(ctx, q, func(ll api.LogLine) error {
			if ll.Mark == api.MarkLive {
				reported = false
				bo.Reset()
				if first {
					first = false
					if !send(followMsg{live: true}) {
						return ctx.Err()
					}
				}
				return nil
			}
			since = ll.Time
			if !send(followMsg{line: ll}) {
				return ctx.Err()
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the agent ended the stream")
		}
		if first {
			first = false
			send(followMsg{err: fmt.Errorf("%w (will keep trying)", err)})
			reported = true
		} else if !reported {
			send(followMsg{err: fmt.Errorf("%w (reconnecting)", err)})
			reported = true
		}
		if !since.IsZero() {
			tail = lateNodeTail // after a break, everything after the last line seen
		}
		if bo.Wait(ctx) != nil {
			return
		}
	}
}
