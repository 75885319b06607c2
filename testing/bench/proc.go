package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deis/deis/coordinator/scheduler"
	"github.com/deis/deis/pkg/embedetcd"
	"github.com/deis/deis/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// The benchmark runs etcd and the scheduler controller as child processes
// (the test binary run again with RoleEnv set), so that the CPU time and
// memory of each can be read from /proc apart from the simulator's.
const (
	RoleEnv   = "DEIS_BENCH_ROLE"   // "etcd" or "controller"
	dirEnv    = "DEIS_BENCH_DIR"    // etcd: data directory
	clientEnv = "DEIS_BENCH_CLIENT" // etcd: client URL; controller: the endpoint
	peerEnv   = "DEIS_BENCH_PEER"   // etcd: peer URL
	prefixEnv = "DEIS_BENCH_PREFIX" // controller: key prefix
	statsEnv  = "DEIS_BENCH_STATS"  // controller: address of its /stats endpoint
)

// RunRole runs the role named by RoleEnv until SIGTERM and returns the exit
// code; TestMain calls it before running any test.
func RunRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch role {
	case "etcd":
		err = runEtcd(ctx)
	case "controller":
		err = runController(ctx)
	default:
		err = fmt.Errorf("unknown %s %q", RoleEnv, role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", role+":", err)
		return 1
	}
	return 0
}

func runEtcd(ctx context.Context) error {
	srv, err := embedetcd.Start(os.Getenv(dirEnv), os.Getenv(clientEnv), os.Getenv(peerEnv))
	if err != nil {
		return err
	}
	defer srv.Close()
	select {
	case <-ctx.Done():
		return nil
	case err := <-srv.Err():
		return err
	}
}

// Stats is what the controller process reports at /stats.
type Stats struct {
	// Passes is the scheduler's deis_coordinator_reconcile_total (-1:
	// the metric is gone).
	Passes float64 `json:"passes"`
	// Gets counts the Range requests the controller sent, GetBytes the
	// keys and values they returned.
	Gets     int64 `json:"gets"`
	GetBytes int64 `json:"getBytes"`
	// Txns counts its transactions (every write is one).
	Txns int64 `json:"txns"`
}

// countingEtcd is the controller's etcd client with its reads counted.
type countingEtcd struct {
	*clientv3.Client
	gets, getBytes, txns atomic.Int64
}

func (c *countingEtcd) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := c.Client.Get(ctx, key, opts...)
	c.gets.Add(1)
	if err == nil {
		n := 0
		for _, kv := range resp.Kvs {
			n += len(kv.Key) + len(kv.Value)
		}
		c.getBytes.Add(int64(n))
	}
	return resp, err
}

func (c *countingEtcd) Txn(ctx context.Context) clientv3.Txn {
	c.txns.Add(1)
	return c.Client.Txn(ctx)
}

func runController(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{os.Getenv(clientEnv)}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	etcd := &countingEtcd{Client: cli}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Leading as deis-coordinator does: every write fenced by the election
	// key this process won.
	pfx := os.Getenv(prefixEnv)
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, state.NewKeys(pfx).Election())
	if err := el.Campaign(ctx, fmt.Sprintf("bench/%d", os.Getpid())); err != nil {
		return err
	}
	fence := scheduler.LeaderFence(el.Key(), el.Rev())
	// As deis-coordinator configures it, with its default flags.
	c, err := scheduler.New(scheduler.Config{
		Etcd: etcd, Prefix: pfx, SlugURL: "http://127.0.0.1:1", BaseDomain: "bench.test",
		BootTimeout: 60 * time.Second, Rollback: scheduler.DefaultRollbackPolicy,
		Fence:  func() []clientv3.Cmp { return fence },
		Logger: log.With("part", "scheduler"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", os.Getenv(statsEnv))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := Stats{Passes: -1, Gets: etcd.gets.Load(), GetBytes: etcd.getBytes.Load(), Txns: etcd.txns.Load()}
		if mfs, err := reg.Gather(); err == nil {
			for _, mf := range mfs {
				if mf.GetName() == "deis_coordinator_reconcile_total" && len(mf.Metric) > 0 {
					st.Passes = mf.Metric[0].GetCounter().GetValue()
				}
			}
		}
		_ = json.NewEncoder(w).Encode(st)
	})}
	go srv.Serve(l)
	defer srv.Close()
	return c.Run(ctx)
}

// proc is a child process of the benchmark.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startRole runs the test binary again as role, with env added, its output
// going to logPath.
func startRole(role, logPath string, env ...string) (*proc, error) {
	return startProc(os.Args[0], []string{"-test.run=^$"}, append([]string{RoleEnv + "=" + role}, env...), logPath)
}

// startProc runs path with args and env added to the test's environment,
// its output going to logPath.
func startProc(path string, args, env []string, logPath string) (*proc, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	// Killed with the test, should it die without stopping them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM and waits, then kills after 10 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// clockTick is USER_HZ, 100 on every Linux architecture Go runs on.
const clockTick = 100

// cpu is the process's user and system time so far.
func (p *proc) cpu() (time.Duration, error) { return procCPU(p.cmd.Process.Pid) }

func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// mem is the process's resident set now and at its peak, in bytes.
func (p *proc) mem() (rss, peak int64, err error) { return procMem(p.cmd.Process.Pid) }

func procMem(pid int) (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(fs[0], 10, 64)
		if k == "VmRSS" {
			rss = kb * 1024
		} else {
			peak = kb * 1024
		}
	}
	return rss, peak, sc.Err()
}

// stats asks the controller process for its counters.
func stats(ctx context.Context, addr string) (Stats, error) {
	var st Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
