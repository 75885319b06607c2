package runtime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// Bounds of the lines kept of removed containers, per formation.
const (
	DefaultRetiredLines = 1000
	DefaultRetiredBytes = 256 << 10
	// retiredIDs is how many container ids a formation remembers as
	// already kept, so a retried removal keeps their lines once.
	retiredIDs = 256
	// retiredLineMax cuts longer lines.
	retiredLineMax = 16 << 10
	// retiredReadTimeout bounds reading one container's last lines.
	retiredReadTimeout = 5 * time.Second
	// pruneEvery is how often formations with kept lines but no container
	// on the node are looked up in etcd.
	pruneEvery = resyncEvery
)

// logReader reads a container's output. The Docker client implements it;
// a Docker without it (a fake) keeps no retired lines.
type logReader interface {
	ContainerLogs(ctx context.Context, id string, options container.LogsOptions) (io.ReadCloser, error)
}

// RetiredLine is a line of a container the runtime removed (retired by a
// rollout, scaled down, or replaced after it exited).
type RetiredLine struct {
	Time time.Time
	// ID is the Docker id of the container, which no longer exists.
	ID string
	// Container is its spec name (hello.v3.web.1).
	Container string
	Release   int
	Type      string
	// Stream is "stdout" or "stderr".
	Stream string
	Line   string
}

// size is what a line counts against the bytes bound.
func (l RetiredLine) size() int { return len(l.Line) + len(l.Container) + len(l.ID) + 64 }

// retiredLogs keeps the last lines of removed containers, in memory, per
// formation: at most maxLines lines and maxBytes bytes each, oldest
// dropped first.
type retiredLogs struct {
	maxLines, maxBytes int

	mu     sync.Mutex
	byFor  map[string]*retiredBuf
	pruned time.Time // the last pruneRetired that looked formations up
}

type retiredBuf struct {
	lines []RetiredLine // oldest first
	bytes int
	ids   []string // containers already kept, oldest first
}

func newRetiredLogs(maxLines, maxBytes int) *retiredLogs {
	return &retiredLogs{maxLines: maxLines, maxBytes: maxBytes, byFor: map[string]*retiredBuf{}}
}

func (k *retiredLogs) off() bool { return k.maxLines < 0 || k.maxBytes < 0 }

// kept reports whether the lines of container id were kept already.
func (k *retiredLogs) kept(formation, id string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if b := k.byFor[formation]; b != nil {
		for _, have := range b.ids {
			if have == id {
				return true
			}
		}
	}
	return false
}

// add keeps the lines of container id, merged by time with what the
// formation has, then trims the formation to the bounds.
func (k *retiredLogs) add(formation, id string, lines []RetiredLine) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.byFor[formation]
	if b == nil {
		b = &retiredBuf{}
		k.byFor[formation] = b
	}
	b.ids = append(b.ids, id)
	if len(b.ids) > retiredIDs {
		b.ids = b.ids[len(b.ids)-retiredIDs:]
	}
	b.lines = append(b.lines, lines...)
	for _, l := range lines {
		b.bytes += l.size()
	}
	sort.SliceStable(b.lines, func(i, j int) bool { return b.lines[i].Time.Before(b.lines[j].Time) })
	drop := 0
	for drop < len(b.lines) && (len(b.lines)-drop > k.maxLines || b.bytes > k.maxBytes) {
		b.bytes -= b.lines[drop].size()
		drop++
	}
	b.lines = append([]RetiredLine(nil), b.lines[drop:]...)
}

// wake asks for a status write when the formations with kept lines
// changed (NodeStatus.RetiredLogs).
func (r *Runtime) wakeRetired(before int) {
	if len(r.retired.formations()) != before && r.wakeStatus != nil {
		r.wakeStatus.Wake()
	}
}

// lines returns a copy of a formation's kept lines, oldest first.
func (k *retiredLogs) lines(formation string) []RetiredLine {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.byFor[formation]
	if b == nil {
		return nil
	}
	return append([]RetiredLine(nil), b.lines...)
}

// formations lists the formations with kept lines.
func (k *retiredLogs) formations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.byFor))
	for f := range k.byFor {
		out = append(out, f)
	}
	return out
}

func (k *retiredLogs) drop(formation string) {
	k.mu.Lock()
	delete(k.byFor, formation)
	k.mu.Unlock()
}

// RetiredLines returns the last lines, oldest first, of the formation's
// containers that this runtime removed since it started (the agent API
// serves them beside the live containers' output). They are kept in
// memory: an agent restart forgets them.
func (r *Runtime) RetiredLines(formation string) []RetiredLine {
	return r.retired.lines(formation)
}

// keepRetired reads the last lines of a container about to be removed
// into the retired buffer of its formation. It never fails the removal:
// lines it cannot read are logged and lost.
func (r *Runtime) keepRetired(ctx context.Context, c actual) {
	lr, ok := r.cfg.Docker.(logReader)
	formation := c.Labels[labelFormation]
	if !ok || r.retired.off() || formation == "" || r.retired.kept(formation, c.ID) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, retiredReadTimeout)
	defer cancel()
	rc, err := lr.ContainerLogs(rctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true,
		Timestamps: true, Tail: strconv.Itoa(r.retired.maxLines)})
	if err != nil {
		if !isNotFound(err) {
			r.log.Warn("read the last lines of a retired container", "container", c.specName(), "id", shortID(c.ID), "error", err)
		}
		return
	}
	defer rc.Close()
	rel, _ := strconv.Atoi(c.Labels[labelRelease])
	base := RetiredLine{ID: c.ID, Container: c.specName(), Release: rel, Type: c.Labels[labelType]}
	var lines []RetiredLine
	out := func(stream string) *LineSplitter {
		return &LineSplitter{Max: retiredLineMax, Emit: func(raw []byte) {
			l := base
			l.Stream = stream
			if len(lines) > 0 {
				l.Time = lines[len(lines)-1].Time
			}
			ts, rest, ok := bytes.Cut(raw, []byte(" "))
			if t, err := time.Parse(time.RFC3339Nano, string(ts)); ok && err == nil {
				l.Time, raw = t, rest
			}
			l.Line = strings.TrimRight(string(raw), "\r")
			lines = append(lines, l)
		}}
	}
	stdout, stderr := out("stdout"), out("stderr")
	_, err = stdcopy.StdCopy(stdout, stderr, rc)
	stdout.Flush()
	stderr.Flush()
	if err != nil && !errors.Is(err, context.Canceled) {
		r.log.Warn("read the last lines of a retired container", "container", c.specName(), "id", shortID(c.ID), "error", err)
	}
	if len(lines) == 0 {
		return // never started, or silent
	}
	before := len(r.retired.formations())
	r.retired.add(formation, c.ID, lines)
	r.wakeRetired(before)
}

// pruneRetired drops the kept lines of formations that no longer exist:
// those with no container in the databag whose formation record is gone.
func (r *Runtime) pruneRetired(ctx context.Context, desired []state.ContainerSpec) {
	k := r.retired
	k.mu.Lock()
	if time.Since(k.pruned) < pruneEvery {
		k.mu.Unlock()
		return
	}
	k.pruned = time.Now()
	k.mu.Unlock()
	assigned := map[string]bool{}
	for _, s := range desired {
		assigned[s.Formation] = true
	}
	for _, f := range r.retired.formations() {
		if assigned[f] {
			continue
		}
		var rec state.Formation
		gctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		_, err := r.cfg.Store.Get(gctx, r.cfg.Store.Keys.Formation(f), &rec)
		cancel()
		if errors.Is(err, state.ErrNotFound) {
			before := len(r.retired.formations())
			r.retired.drop(f)
			r.wakeRetired(before)
		}
	}
}

// LineSplitter calls Emit with each complete line written to it, without
// its newline; a line longer than Max bytes is emitted in pieces. Flush
// emits what is left of a last line without a newline. The agent API's log
// stream and the retired containers' lines read Docker's output with it.
type LineSplitter struct {
	Max  int
	Emit func([]byte)
	buf  []byte
}

func (w *LineSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) >= w.Max {
				w.Flush()
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		w.Flush()
		p = p[i+1:]
	}
	return n, nil
}

// Flush emits a pending partial line.
func (w *LineSplitter) Flush() {
	if len(w.buf) > 0 {
		w.Emit(w.buf)
		w.buf = w.buf[:0]
	}
}
