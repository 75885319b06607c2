package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Default answer count reporting: how often the agent reads nginx's
// counters, how far back a report reaches, and how often an unchanged
// non-zero report is written again so the coordinator knows it is current.
const (
	DefaultTrafficInterval = 5 * time.Second
	DefaultTrafficWindow   = time.Minute
	trafficRefresh         = 30 * time.Second
)

// counterKey is one of nginx's answer counters.
type counterKey struct {
	Formation string
	Release   int
	Class     string // 2xx, 3xx, 4xx, 5xx
}

// counts maps formation -> release -> class -> answers.
type counts map[string]map[int]map[string]int64

func (c counts) add(k counterKey, n int64) {
	if c[k.Formation] == nil {
		c[k.Formation] = map[int]map[string]int64{}
	}
	if c[k.Formation][k.Release] == nil {
		c[k.Formation][k.Release] = map[string]int64{}
	}
	c[k.Formation][k.Release][k.Class] += n
}

// parseTraffic reads the control server's /traffic answer: one
// "<formation> <release> <class> <count>" a line.
func parseTraffic(r io.Reader) (map[counterKey]int64, error) {
	out := map[counterKey]int64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 4 {
			return nil, fmt.Errorf("proxy: unreadable answer counter %q", sc.Text())
		}
		rel, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || rel < 1 || n < 0 || state.ValidateName("formation", f[0]) != nil {
			return nil, fmt.Errorf("proxy: unreadable answer counter %q", sc.Text())
		}
		out[counterKey{f[0], rel, f[2]}] = n
	}
	return out, sc.Err()
}

// traffic reads nginx's answer counters.
func (n *nginx) traffic(ctx context.Context) (map[counterKey]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://nginx/traffic", nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.ctl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("proxy: read answer counters: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("proxy: read answer counters: control server answered %s", resp.Status)
	}
	return parseTraffic(io.LimitReader(resp.Body, 8<<20))
}

// sample is what nginx counted between two reads.
type sample struct {
	at    time.Time
	delta map[counterKey]int64
}

// trafficWindow turns nginx's ever-growing counters into the answers of the
// last window. It is used by one goroutine.
type trafficWindow struct {
	window  time.Duration
	last    map[counterKey]int64 // nil until the first read
	samples []sample
}

// observe takes a read of the counters at now and returns the answers of
// the window. The first read only primes it. A counter smaller than
// before is new (it expired, or nginx started again): all of it counts.
func (t *trafficWindow) observe(now time.Time, cur map[counterKey]int64) counts {
	if t.last != nil {
		d := map[counterKey]int64{}
		for k, n := range cur {
			if prev := t.last[k]; n >= prev {
				if n > prev {
					d[k] = n - prev
				}
			} else {
				d[k] = n
			}
		}
		t.samples = append(t.samples, sample{at: now, delta: d})
	}
	t.last = cur
	i := 0
	for i < len(t.samples) && now.Sub(t.samples[i].at) > t.window {
		i++
	}
	t.samples = t.samples[i:]
	out := counts{}
	for _, s := range t.samples {
		for k, n := range s.delta {
			out.add(k, n)
		}
	}
	return out
}

// reported is the last report written for a formation.
type reported struct {
	counts map[int]map[string]int64
	at     time.Time
}

// reportTraffic reads nginx's answer counters every interval and writes
// each formation's answers of the last window to its traffic key, only
// when they changed (or every half minute while they are not zero); it
// deletes the key once the window holds none. It returns when ctx ends.
func (p *Proxy) reportTraffic(ctx context.Context) {
	interval, window := p.cfg.TrafficInterval, p.cfg.TrafficWindow
	if interval <= 0 {
		interval = DefaultTrafficInterval
	}
	if window <= 0 {
		window = DefaultTrafficWindow
	}
	tw := &trafficWindow{window: window}
	last := map[string]reported{}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur, err := p.ngx.traffic(ctx)
		if err != nil {
			if !failing && ctx.Err() == nil {
				p.log.Debug("cannot read answer counters", "node", p.cfg.Node, "error", err)
			}
			failing = true
			continue
		}
		failing = false
		now := time.Now().UTC()
		if err := p.writeTraffic(ctx, now, window, tw.observe(now, cur), last); err != nil && ctx.Err() == nil {
			p.log.Warn("cannot report answer counts", "node", p.cfg.Node, "error", err)
		}
	}
}

// writeTraffic writes the reports that changed and deletes those that
// emptied, remembering what it wrote in last.
func (p *Proxy) writeTraffic(ctx context.Context, now time.Time, window time.Duration, c counts, last map[string]reported) error {
	s := p.cfg.Store
	var errs []error
	for f, rels := range c {
		old, had := last[f]
		if had && sameCounts(old.counts, rels) && now.Sub(old.at) < trafficRefresh {
			continue
		}
		r := state.TrafficReport{Node: p.cfg.Node, At: now, Window: window, Releases: rels}
		if err := s.Put(ctx, s.Keys.TrafficOf(f, p.cfg.Node), r); err != nil {
			errs = append(errs, err)
			continue
		}
		last[f] = reported{counts: rels, at: now}
	}
	for f := range last {
		if _, ok := c[f]; ok {
			continue
		}
		if _, err := s.KV.Txn(ctx).Then(clientv3.OpDelete(s.Keys.TrafficOf(f, p.cfg.Node))).Commit(); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(last, f)
	}
	return errors.Join(errs...)
}

func sameCounts(a, b map[int]map[string]int64) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]int64) bool { return maps.Equal(x, y) })
}
