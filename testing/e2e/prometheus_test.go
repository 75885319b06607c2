package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
	"github.com/deis/deis/testing/need"
)

// shippedPrometheus is where the Prometheus files installed with the
// platform live, relative to this package.
const shippedPrometheus = "../../systemd/prometheus"

// TestPrometheusScrapesPlatform runs a real Prometheus server against a
// running platform with the shipped alert rules: every coordinator and agent
// target is up, a rollout shows in deis_coordinator_rollout_duration_seconds,
// agent and proxy series exist, every metric the rules name is scraped and
// every rule evaluates without error. It first checks the shipped
// prometheus.yml and deis-alerts.yml with promtool.
func TestPrometheusScrapesPlatform(t *testing.T) {
	promBin := need.Binary(t, "prometheus")
	rules := shippedRules(t)

	t.Run("promtool", func(t *testing.T) {
		promtool := need.Binary(t, "promtool")
		dir := t.TempDir()
		rulesPath := filepath.Join(dir, "deis-alerts.yml")
		if err := os.WriteFile(rulesPath, rules, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "rules", rulesPath).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules: %v\n%s", err, out)
		}
		conf, err := os.ReadFile(filepath.Join(shippedPrometheus, "prometheus.yml"))
		if err != nil {
			t.Fatal(err)
		}
		const installed = "/etc/prometheus/deis-alerts.yml"
		if !strings.Contains(string(conf), installed) {
			t.Fatalf("prometheus.yml no longer loads %s; update this test", installed)
		}
		confPath := filepath.Join(dir, "prometheus.yml")
		if err := os.WriteFile(confPath, []byte(strings.ReplaceAll(string(conf), installed, rulesPath)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "config", confPath).CombinedOutput(); err != nil {
			t.Fatalf("promtool check config: %v\n%s", err, out)
		}
	})

	p := harness.NewPlatform(t)
	a := p.StartAgent("prom", harness.AgentOptions{})
	prom := startPrometheus(t, promBin, rules,
		[]string{fmt.Sprintf("127.0.0.1:%d", p.HTTPPort)}, []string{a.MetricsAddr})

	deploy(t, p, "prom")
	host := "prom.localhost"
	p.WaitApp(a, host, "hello from prom (v1)", 3*time.Minute)
	p.MustCtl("", "config:set", "GREETING=scraped", "-f", "prom")
	p.WaitApp(a, host, "scraped from prom (v2)", 3*time.Minute)

	harness.Eventually(t, time.Minute, "every target up", func() (bool, string) {
		var targets struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := prom.api("/api/v1/targets", nil, &targets); err != nil {
			return false, err.Error()
		}
		if len(targets.ActiveTargets) != 2 {
			return false, fmt.Sprintf("want 2 active targets, got %+v", targets.ActiveTargets)
		}
		for _, tg := range targets.ActiveTargets {
			if tg.Health != "up" {
				return false, fmt.Sprintf("%s is %q: %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
		}
		return true, ""
	})

	harness.Eventually(t, time.Minute, "a rollout in deis_coordinator_rollout_duration_seconds_count", func() (bool, string) {
		v, err := prom.scalar("sum(deis_coordinator_rollout_duration_seconds_count)")
		if err != nil {
			return false, err.Error()
		}
		return v > 0, fmt.Sprintf("value %v", v)
	})

	// Every metric the alert rules name is scraped, and agent and proxy
	// series are there.
	wantNames := ruleMetrics(rules)
	if len(wantNames) == 0 {
		t.Fatal("no deis_ metric found in deis-alerts.yml")
	}
	harness.Eventually(t, time.Minute, "agent, proxy and alerted-on series", func() (bool, string) {
		var names []string
		if err := prom.api("/api/v1/label/__name__/values", nil, &names); err != nil {
			return false, err.Error()
		}
		var missing []string
		for _, prefix := range []string{"deis_agent_", "deis_proxy_", "deis_coordinator_"} {
			if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, prefix) }) {
				missing = append(missing, prefix+"*")
			}
		}
		for _, n := range wantNames {
			if !slices.Contains(names, n) {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing %v among %v", missing, names)
	})

	harness.Eventually(t, time.Minute, "every alert rule evaluated without error", func() (bool, string) {
		var rs struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := prom.api("/api/v1/rules", nil, &rs); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, g := range rs.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					return false, fmt.Sprintf("rule %s is %q: %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		return n > 0, "no rules loaded"
	})
}

// shippedRules reads the shipped alert rules.
func shippedRules(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(shippedPrometheus, "deis-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var metricName = regexp.MustCompile(`\bdeis_[a-z0-9_]+`)

// ruleMetrics lists the deis_ metric names the rules' text mentions.
func ruleMetrics(rules []byte) []string {
	seen := map[string]bool{}
	for _, m := range metricName.FindAllString(string(rules), -1) {
		seen[m] = true
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// promServer is a Prometheus server the test started.
type promServer struct {
	base string
	log  *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startPrometheus runs prometheus with its own storage, scraping the
// coordinators and agents every second and evaluating rules every second,
// and waits until it is ready. It is killed when the test ends.
func startPrometheus(t *testing.T, bin string, rules []byte, coordinators, agents []string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "deis-alerts.yml")
	if err := os.WriteFile(rulesPath, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	quote := func(addrs []string) string {
		q := make([]string, len(addrs))
		for i, a := range addrs {
			q[i] = strconv.Quote(a)
		}
		return strings.Join(q, ", ")
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: deis-coordinator
    static_configs:
      - targets: [%s]
  - job_name: deis-agent
    static_configs:
      - targets: [%s]
`, rulesPath, quote(coordinators), quote(agents))
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, "127.0.0.1"))
	s := &promServer{base: "http://" + addr, log: &lockedBuffer{}}
	cmd := exec.Command(bin,
		"--config.file="+confPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("---- prometheus log ----\n%s", s.log.String())
		}
	})
	harness.Eventually(t, time.Minute, "prometheus ready", func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", s.log.String())
		default:
		}
		resp, err := http.Get(s.base + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return s
}

// api GETs a Prometheus HTTP API path and decodes its data field into v.
func (s *promServer) api(path string, q url.Values, v any) error {
	u := s.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %v: %s", path, err, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// scalar runs an instant query that yields one sample and returns its value.
func (s *promServer) scalar(query string) (float64, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	if err := s.api("/api/v1/query", url.Values{"query": {query}}, &data); err != nil {
		return 0, err
	}
	if len(data.Result) != 1 {
		return 0, fmt.Errorf("query %s: want one sample, got %d", query, len(data.Result))
	}
	str, ok := data.Result[0].Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("query %s: odd value %v", query, data.Result[0].Value)
	}
	return strconv.ParseFloat(str, 64)
}
