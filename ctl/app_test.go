package ctl

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/need"
	"github.com/deis/deis/testing/pkitest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/ssh"
)

// cluster is a real etcd plus helpers to run deisctl against it in-process.
type cluster struct {
	t     *testing.T
	url   string
	cli   *clientv3.Client
	store *state.Store
	// ca issues deisctl's certificate (the bootstrap administrator's) for
	// the agent API and build logs; etcd itself is plain here.
	ca    *pkitest.CA
	creds []string // --etcd-cacert, --etcd-cert, --etcd-key flags
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	url, cli := etcdtest.Start(t)
	c := &cluster{t: t, url: url, cli: cli, store: state.NewStore(cli, ""), ca: pkitest.New(t)}
	c.creds = c.credsFor("deis:user-" + state.BootstrapAdmin)
	return c
}

// credsFor writes a certificate of identity and the CA to files and returns
// the flags that make deisctl use them.
func (c *cluster) credsFor(identity string) []string {
	c.t.Helper()
	dir := c.t.TempDir()
	cert, key, err := c.ca.Leaf(identity, pki.Client).WriteFiles(dir, "client")
	if err != nil {
		c.t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.crt")
	if err := c.ca.WriteCA(caPath); err != nil {
		c.t.Fatal(err)
	}
	return []string{"--etcd-cacert", caPath, "--etcd-cert", cert, "--etcd-key", key}
}

// base is deisctl's global flags for the cluster.
func (c *cluster) base() []string {
	return append([]string{"deisctl", "--etcd-endpoints", c.url}, c.creds...)
}

// run runs deisctl with args and returns stdout, stderr and the error.
func (c *cluster) run(args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	app := NewApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(append(c.base(), args...))
	return out.String(), errOut.String(), err
}

// ok runs deisctl and fails the test on error.
func (c *cluster) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("deisctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fails runs deisctl, wants an error containing want, and checks that
// nothing was written to etcd.
func (c *cluster) fails(want string, args ...string) {
	c.t.Helper()
	before := c.revision()
	out, _, err := c.run(args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		c.t.Fatalf("deisctl %s: err = %v, want one containing %q (stdout %q)", strings.Join(args, " "), err, want, out)
	}
	if after := c.revision(); after != before {
		c.t.Fatalf("deisctl %s failed but wrote to etcd (revision %d -> %d)", strings.Join(args, " "), before, after)
	}
}

func (c *cluster) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c.t.Cleanup(cancel)
	return ctx
}

// revision is etcd's current revision; it moves on every write.
func (c *cluster) revision() int64 {
	c.t.Helper()
	resp, err := c.cli.Get(c.ctx(), "revision-probe")
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (c *cluster) get(key string, v any) {
	c.t.Helper()
	if _, err := c.store.Get(c.ctx(), key, v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) exists(key string) bool {
	c.t.Helper()
	resp, err := c.cli.Get(c.ctx(), key, clientv3.WithCountOnly())
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.Count > 0
}

func (c *cluster) put(key string, v any) {
	c.t.Helper()
	if err := c.store.Put(c.ctx(), key, v); err != nil {
		c.t.Fatal(err)
	}
}

// seedRelease creates formation f and its release v1 with web and worker
// types, the way the builder would.
func (c *cluster) seedRelease(f string, cfg map[string]string) {
	c.t.Helper()
	c.ok("formations:create", f)
	build := &state.Build{ID: "b1", Formation: f, GitSHA: "0123456789abcdef0123", Image: "deis/stack:bookworm",
		Slug: &state.SlugRef{SHA256: "feedbeef", Size: 42}, ProcessTypes: map[string]string{"web": "python3 -m http.server $PORT", "worker": "sleep infinity"}}
	c.put(c.store.Keys.Build(f, "b1"), build)
	if cfg == nil {
		cfg = map[string]string{}
	}
	_, err := c.store.AppendRelease(c.ctx(), f, func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: build, Config: cfg, Description: "Deploy b1"}, nil,
			[]clientv3.Op{clientv3.OpPut(c.store.Keys.Config(f), state.Marshal(state.Config{Vars: cfg}))}, nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) release(f string, v int) *state.Release {
	c.t.Helper()
	var r state.Release
	c.get(c.store.Keys.Release(f, v), &r)
	return &r
}

func (c *cluster) latest(f string) int {
	c.t.Helper()
	r, err := c.store.LatestRelease(c.ctx(), f)
	if err != nil {
		c.t.Fatal(err)
	}
	return r.Version
}

func (c *cluster) config(f string) map[string]string {
	c.t.Helper()
	var cfg state.Config
	c.get(c.store.Keys.Config(f), &cfg)
	return cfg.Vars
}

func contains(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestFormationsCreate(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys

	out := c.ok("formations:create", "hello")
	contains(t, out, "has not registered yet",
		"git remote add deis ssh://git@localhost:2222/hello.git", "git push deis main", "http://hello.localhost:8080/")
	var f state.Formation
	c.get(k.Formation("hello"), &f)
	if f.Name != "hello" || f.Created.IsZero() {
		t.Fatalf("formation = %+v", f)
	}
	for _, typ := range []state.LayerType{state.LayerRuntime, state.LayerProxy} {
		var l state.Layer
		c.get(k.Layer("hello", string(typ)), &l)
		if l.Type != typ || l.Selector["role"] != string(typ) || l.Formation != "hello" {
			t.Fatalf("layer %s = %+v", typ, l)
		}
	}
	if cfg := c.config("hello"); cfg == nil || len(cfg) != 0 {
		t.Fatalf("config = %#v, want an empty map", cfg)
	}

	c.fails(`formation "hello" already exists`, "formations:create", "hello")
	for _, bad := range []string{"Hello", "../x", strings.Repeat("a", 70)} {
		c.fails("invalid formation name", "formations:create", bad)
	}

	// Once the coordinator has registered, its endpoints are shown.
	c.put(k.Coordinator(), state.CoordinatorInfo{SSHHost: "deis.example.com", SSHPort: 2022, BaseDomain: "apps.example.com", HTTPPort: 80})
	out = c.ok("formations:create", "web")
	contains(t, out, "git remote add deis ssh://git@deis.example.com:2022/web.git", "http://web.apps.example.com/")
	if strings.Contains(out, "not registered") {
		t.Fatalf("claims the coordinator is missing:\n%s", out)
	}

	// --base-domain adds a domain and shows its URL; flags may follow the name.
	out = c.ok("formations:create", "docs", "--base-domain", "example.org")
	contains(t, out, "http://docs.example.org/")
	c.get(k.Formation("docs"), &f)
	if len(f.Domains) != 1 || f.Domains[0] != "docs.example.org" {
		t.Fatalf("domains = %v", f.Domains)
	}

	out = c.ok("formations:list")
	contains(t, out, "NAME", "hello", "web", "docs.example.org")
	var list []formationJSON
	if err := json.Unmarshal([]byte(c.ok("formations:list", "--json")), &list); err != nil || len(list) != 3 {
		t.Fatalf("formations:list --json = %v, %v", list, err)
	}
	contains(t, c.ok("formations:info", "hello"), "=== hello", "ssh://git@deis.example.com:2022/hello.git", "none yet")
	contains(t, c.ok("formations:info", "-f", "web"), "=== web")

	// The HTTPS URL, when the coordinator advertises an HTTPS port and the
	// proxies serve HTTPS (no proxy registered yet: their default does).
	c.put(k.Coordinator(), state.CoordinatorInfo{SSHHost: "deis.example.com", SSHPort: 2022, BaseDomain: "apps.example.com",
		HTTPPort: 80, HTTPSPort: 443})
	out = c.ok("formations:create", "secure")
	contains(t, out, "http://secure.apps.example.com/", "https://secure.apps.example.com/")
	c.put(k.Node("p1"), state.Node{Name: "p1", Addr: "127.0.0.1", HTTPPort: 80, HTTPSPort: 443})
	contains(t, c.ok("formations:info", "secure"), "https://secure.apps.example.com/")
	var info formationInfoJSON
	if err := json.Unmarshal([]byte(c.ok("formations:info", "secure", "--json")), &info); err != nil || info.HTTPSURL != "https://secure.apps.example.com/" {
		t.Errorf("formations:info --json httpsURL = %q, %v", info.HTTPSURL, err)
	}
	// A proxy without HTTPS (--https-listen empty): no HTTPS URL.
	c.put(k.Node("p1"), state.Node{Name: "p1", Addr: "127.0.0.1", HTTPPort: 80})
	if out := c.ok("formations:create", "plain"); strings.Contains(out, "https://") {
		t.Errorf("an HTTPS URL though no proxy serves HTTPS:\n%s", out)
	}
}

func TestFormationsDestroy(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.seedRelease("hello", map[string]string{"A": "1"})
	c.ok("formations:create", "hello2")

	c.fails("--confirm hello", "formations:destroy", "hello")
	c.fails("--confirm hello", "formations:destroy", "hello", "--confirm", "hell")
	c.fails("not found", "formations:destroy", "nope", "--confirm", "nope")

	// what the coordinator and the proxies wrote about it
	c.put(k.ReleaseStatus("hello", 1), state.ReleaseStatus{Version: 1, Failed: true})
	c.put(k.FormationStatus("hello"), state.FormationStatus{Formation: "hello"})
	c.put(k.ProxyAck("hello", "p1"), state.ProxyAck{Node: "p1", Revision: 3})
	c.put(k.Routing("hello"), state.Routing{Formation: "hello"})
	c.put(k.Perm("hello", "alice"), state.Perm{Formation: "hello", User: "alice"})

	contains(t, c.ok("formations:destroy", "hello", "--confirm", "hello"), "done", "git repository")
	for _, key := range []string{k.Formation("hello"), k.Layer("hello", "runtime"), k.Config("hello"), k.Release("hello", 1),
		k.ReleaseStatus("hello", 1), k.FormationStatus("hello"), k.Routing("hello"), k.Perm("hello", "alice")} {
		if c.exists(key) {
			t.Errorf("%s survived formations:destroy", key)
		}
	}
	// Created again, it starts empty: no release, and its v1 is not failed.
	c.seedRelease("hello", nil)
	if cfg := c.config("hello"); len(cfg) != 0 {
		t.Errorf("the re-created formation has the old config %v", cfg)
	}
	if v := c.latest("hello"); v != 1 {
		t.Errorf("the re-created formation's first release is v%d", v)
	}
	contains(t, c.ok("releases", "-f", "hello"), "v1")
	if out := c.ok("releases", "-f", "hello"); strings.Contains(out, "failed") {
		t.Errorf("v1 of the re-created formation shows as failed:\n%s", out)
	}
	// A formation whose name extends the destroyed one is untouched.
	if !c.exists(k.Layer("hello2", "runtime")) || !c.exists(k.Config("hello2")) {
		t.Fatal("destroying hello removed hello2's keys")
	}
}

func TestKeys(t *testing.T) {
	c := newCluster(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
	path := filepath.Join(t.TempDir(), "id_ed25519.pub")
	if err := os.WriteFile(path, []byte(line+" alice@laptop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := ssh.FingerprintSHA256(pk)

	out := c.ok("keys:add", path)
	contains(t, out, fp)
	var key state.SSHKey
	c.get(c.store.Keys.SSHKey(state.SSHKeyID(fp)), &key)
	if key.Fingerprint != fp || key.User != "admin" || key.PublicKey != line || key.Comment != "alice@laptop" {
		t.Fatalf("stored key = %+v", key)
	}
	c.fails("already registered", "keys:add", path, "--user", "bob")
	c.fails("invalid user name", "keys:add", "--user", "Bob!", path)

	notKey := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(notKey, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.fails("not an SSH public key", "keys:add", notKey)

	contains(t, c.ok("keys:list"), fp, "admin", "alice@laptop")
	var keys []state.SSHKey
	if err := json.Unmarshal([]byte(c.ok("keys:list", "--json")), &keys); err != nil || len(keys) != 1 || keys[0].Fingerprint != fp {
		t.Fatalf("keys:list --json = %v, %v", keys, err)
	}
	c.ok("keys:remove", fp)
	if c.exists(c.store.Keys.SSHKey(state.SSHKeyID(fp))) {
		t.Fatal("key survived keys:remove")
	}
	c.fails("no key with fingerprint", "keys:remove", fp)
}

func TestConfig(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)

	out := c.ok("config:set", "GREETING=hi there", "-f", "hello")
	contains(t, out, "Setting config vars and restarting hello... done, v2")
	r := c.release("hello", 2)
	if r.Description != "Set GREETING" || r.Config["GREETING"] != "hi there" || r.Build == nil || r.Build.ID != "b1" {
		t.Fatalf("v2 = %+v", r)
	}
	if c.config("hello")["GREETING"] != "hi there" {
		t.Fatalf("config = %v", c.config("hello"))
	}

	// Bad keys and malformed pairs write nothing, even with good pairs beside them.
	c.fails(`invalid config key "1BAD"`, "config:set", "-f", "hello", "OK=1", "1BAD=x")
	c.fails("malformed config pair", "config:set", "-f", "hello", "NOEQUALS")
	c.fails("not found", "config:set", "-f", "nope", "A=1")
	if v := c.latest("hello"); v != 2 {
		t.Fatalf("latest release = v%d after failed config:set, want v2", v)
	}

	out = c.ok("config", "-f", "hello")
	contains(t, out, "=== hello Config Vars", "GREETING:", "hi there")
	var vars map[string]string
	if err := json.Unmarshal([]byte(c.ok("config:list", "-f", "hello", "--json")), &vars); err != nil || vars["GREETING"] != "hi there" {
		t.Fatalf("config --json = %v, %v", vars, err)
	}

	// Setting the same value again changes nothing and makes no release.
	contains(t, c.ok("config:set", "GREETING=hi there", "-f", "hello"), "no change, no new release")
	if v := c.latest("hello"); v != 2 {
		t.Fatalf("no-op config:set made v%d", v)
	}

	contains(t, c.ok("config:unset", "GREETING", "-f", "hello"), "Unsetting GREETING and restarting hello... done, v3")
	if r := c.release("hello", 3); r.Description != "Unset GREETING" || len(r.Config) != 0 {
		t.Fatalf("v3 = %+v", r)
	}
	if _, ok := c.config("hello")["GREETING"]; ok {
		t.Fatal("GREETING still in config after unset")
	}
	c.fails("invalid config key", "config:unset", "-f", "hello", "BAD-KEY")

	// Without a release only the config changes.
	c.ok("formations:create", "fresh")
	contains(t, c.ok("config:set", "A=1", "-f", "fresh"), "no release yet")
	if c.config("fresh")["A"] != "1" || c.exists(c.store.Keys.Release("fresh", 1)) {
		t.Fatal("config:set without a release wrote a release or lost the value")
	}
}

func TestConfigSetConcurrent(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, pair := range []string{"ALPHA=1", "BETA=2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = c.run("config:set", pair, "-f", "hello")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if v := c.latest("hello"); v != 3 {
		t.Fatalf("latest = v%d, want v3 (one release per config:set)", v)
	}
	descs := map[string]bool{c.release("hello", 2).Description: true, c.release("hello", 3).Description: true}
	if !descs["Set ALPHA"] || !descs["Set BETA"] {
		t.Fatalf("release descriptions = %v", descs)
	}
	for _, vars := range []map[string]string{c.config("hello"), c.release("hello", 3).Config} {
		if vars["ALPHA"] != "1" || vars["BETA"] != "2" {
			t.Fatalf("lost an update: %v", vars)
		}
	}
}

func TestRollback(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", map[string]string{"A": "1"})
	c.ok("config:set", "GREETING=hi", "-f", "hello")

	c.fails("release v99 does not exist", "rollback", "v99", "-f", "hello")
	c.fails("already the current release", "rollback", "v2", "-f", "hello")
	c.fails("invalid release", "rollback", "vx", "-f", "hello")

	contains(t, c.ok("rollback", "v1", "-f", "hello"), "Rolling back hello to v1... done, v3")
	r := c.release("hello", 3)
	if r.Description != "Rollback to v1" || r.Build == nil || r.Build.ID != "b1" || len(r.Config) != 1 || r.Config["A"] != "1" {
		t.Fatalf("v3 = %+v", r)
	}
	if cfg := c.config("hello"); len(cfg) != 1 || cfg["A"] != "1" {
		t.Fatalf("config after rollback = %v, want v1's", cfg)
	}

	// Without a version, roll back to the release before the current one.
	contains(t, c.ok("rollback", "-f", "hello"), "Rolling back hello to v2... done, v4")
	if cfg := c.config("hello"); cfg["GREETING"] != "hi" {
		t.Fatalf("config after rollback to v2 = %v", cfg)
	}

	c.ok("formations:create", "empty")
	c.fails("no releases yet", "rollback", "-f", "empty")
}

func TestScale(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	c.fails(`invalid count "-1"`, "scale", "web=-1", "-f", "hello")
	c.fails(`invalid count "lots"`, "scale", "web=lots", "-f", "hello")
	c.fails(`unknown process type "db"`, "scale", "web=2", "db=1", "-f", "hello")
	c.fails("malformed scale", "scale", "web", "-f", "hello")

	// The first scale starts from the effective scale (web=1).
	contains(t, c.ok("scale", "worker=2", "-f", "hello"), "web=1, worker=2")
	var f state.Formation
	c.get(c.store.Keys.Formation("hello"), &f)
	if f.Scale["web"] != 1 || f.Scale["worker"] != 2 {
		t.Fatalf("scale = %v", f.Scale)
	}
	c.ok("scale", "web=0", "-f", "hello")
	c.get(c.store.Keys.Formation("hello"), &f)
	if f.Scale["web"] != 0 || f.Scale["worker"] != 2 {
		t.Fatalf("scale = %v", f.Scale)
	}

	c.ok("formations:create", "empty")
	c.fails("no release yet", "scale", "web=1", "-f", "empty")
}

func TestReleases(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	c.ok("config:set", "GREETING=hi", "-f", "hello")
	c.put(c.store.Keys.ReleaseStatus("hello", 2), state.ReleaseStatus{Version: 2, Failed: true, Reason: "no runtime node"})
	c.put(c.store.Keys.Routing("hello"), state.Routing{Formation: "hello", Release: 1})

	out := c.ok("releases", "-f", "hello")
	contains(t, out, "VERSION", "DESCRIPTION", "STATUS", "Set GREETING", "failed: no runtime node", "Deploy b1", "live")
	if strings.Index(out, "v2") > strings.Index(out, "v1") {
		t.Fatalf("releases not newest first:\n%s", out)
	}
	var rels []releaseJSON
	if err := json.Unmarshal([]byte(c.ok("releases:list", "--json", "-f", "hello")), &rels); err != nil {
		t.Fatal(err)
	}
	if len(rels) != 2 || rels[0].Version != 2 || rels[0].Status != "failed" || rels[1].Version != 1 || rels[1].Status != "live" {
		t.Fatalf("releases --json = %+v", rels)
	}

	out = c.ok("releases:info", "v2", "-f", "hello")
	contains(t, out, "Release v2", "b1", "feedbeef", "web: python3", "worker: sleep", "GREETING")
	if strings.Contains(out, "GREETING=hi") {
		t.Fatalf("releases:info shows config values:\n%s", out)
	}
	c.fails("release v7 does not exist", "releases:info", "v7", "-f", "hello")

	contains(t, c.ok("builds", "-f", "hello"), "b1", "0123456789ab", "web,worker")
	contains(t, c.ok("builds:info", "b1", "-f", "hello"), "feedbeef", "deis/stack:bookworm")
	c.fails("not found", "builds:info", "nope", "-f", "hello")
}

func TestPsStatusNodes(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.seedRelease("hello", nil)
	c.put(k.Node("n1"), state.Node{Name: "n1", Addr: "10.0.0.1", Labels: map[string]string{"role": "runtime,proxy"}})
	c.put(k.Node("n2"), state.Node{Name: "n2", Addr: "10.0.0.2", Labels: map[string]string{"role": "runtime"}})
	c.put(k.Heartbeat("n1"), state.Heartbeat{Node: "n1", At: time.Now()})
	c.put(k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
		{Name: "hello-v1-web-1", Formation: "hello", Release: 1, Type: "web"}}})
	c.put(k.Runtime("n2"), state.Runtime{Node: "n2", Containers: []state.ContainerSpec{
		{Name: "hello-v1-web-2", Formation: "hello", Release: 1, Type: "web"}}})
	c.put(k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
		{Name: "hello-v1-web-1", Formation: "hello", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:30001"}}})

	out := c.ok("ps", "-f", "hello")
	contains(t, out, "NAME", "hello-v1-web-1", "ready", "10.0.0.1:30001", "hello-v1-web-2", "pending")
	var rows []psRow
	if err := json.Unmarshal([]byte(c.ok("ps", "-f", "hello", "--json")), &rows); err != nil || len(rows) != 2 {
		t.Fatalf("ps --json = %v, %v", rows, err)
	}

	contains(t, c.ok("nodes:list"), "n1", "up", "n2", "lost", "role=runtime,proxy")

	out = c.ok("status")
	contains(t, out, "=== hello: converging", "Desired release: v1", "n2: pending=1 (node lost", "no routing yet", "lost (no heartbeat): n2")

	// Converge: n2 comes back and reports, routing points at v1, the proxy acks it.
	c.put(k.Heartbeat("n2"), state.Heartbeat{Node: "n2", At: time.Now()})
	c.put(k.NodeStatus("n2"), state.NodeStatus{Node: "n2", Containers: []state.ContainerStatus{
		{Name: "hello-v1-web-2", Formation: "hello", Release: 1, Type: "web", State: state.StateReady}}})
	c.put(k.Routing("hello"), state.Routing{Formation: "hello", Release: 1})
	var r state.Routing
	rev, err := c.store.Get(c.ctx(), k.Routing("hello"), &r)
	if err != nil {
		t.Fatal(err)
	}
	c.put(k.ProxyAck("hello", "n1"), state.ProxyAck{Node: "n1", Revision: rev})
	out = c.ok("status", "-f", "hello")
	contains(t, out, "=== hello: converged", fmt.Sprintf("applied revision %d, up to date", rev))
	var st statusJSON
	if err := json.Unmarshal([]byte(c.ok("status", "--json")), &st); err != nil || len(st.Formations) != 1 || !st.Formations[0].Converged {
		t.Fatalf("status --json = %+v, %v", st, err)
	}
}

func TestUnknownCommandAndOfflineCommands(t *testing.T) {
	// Nothing listens here: commands that dial would fail.
	dead := fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		app := NewApp()
		app.Writer, app.ErrWriter = &out, &errOut
		err := app.Run(append([]string{"deisctl", "--etcd-endpoints", dead, "--timeout", "2s"}, args...))
		return out.String(), errOut.String(), err
	}
	_, _, err := run("formations:craete", "hello")
	if err == nil || !strings.Contains(err.Error(), "did you mean formations:create?") {
		t.Fatalf("unknown command: err = %v", err)
	}
	_, _, err = run("keys")
	if err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("keys (an alias of keys:list) should dial and fail: %v", err)
	}
	_, _, err = run("help", "sacle")
	if err == nil || !strings.Contains(err.Error(), "did you mean scale?") {
		t.Fatalf("help sacle: err = %v", err)
	}
	for _, args := range [][]string{{}, {"help"}, {"help", "config:set"}, {"config:set", "--help"}, {"config:set", "A=1", "-h"}} {
		out, _, err := run(args...)
		if err != nil || !strings.Contains(out, "deisctl") {
			t.Fatalf("deisctl %v: err = %v, out %q", args, err, out)
		}
	}
	out, _, err := run("completion", "bash")
	if err != nil || !strings.Contains(out, "complete -o bashdefault -o default -F _deisctl_complete deisctl") {
		t.Fatalf("completion bash: %v\n%s", err, out)
	}
	// urfave/cli's completion looks at os.Args, so make them what a shell would pass.
	saved := os.Args
	os.Args = []string{"deisctl", "config:", "--generate-bash-completion"}
	out, _, err = run("config:", "--generate-bash-completion")
	os.Args = saved
	if err != nil || !strings.Contains(out, "config:set") {
		t.Fatalf("bash completion of commands: %v\n%s", err, out)
	}
}

func TestFormationFromGitRemote(t *testing.T) {
	git := need.Git(t)
	c := newCluster(t)
	c.ok("formations:create", "hello")
	c.ok("config:set", "A=1", "-f", "hello")

	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"remote", "add", "deis", "ssh://git@localhost:2222/hello.git"}} {
		cmd := exec.Command(git, args...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	t.Chdir(repo)
	contains(t, c.ok("config"), "=== hello Config Vars", "A:")
	contains(t, c.ok("config:set", "B=2"), "Setting config vars of hello... done")
	if c.config("hello")["B"] != "2" {
		t.Fatal("config:set without -f did not use the git remote's formation")
	}
	// -f still wins.
	c.ok("formations:create", "other")
	contains(t, c.ok("config", "-f", "other"), "=== other Config Vars")

	t.Chdir(t.TempDir())
	c.fails("no formation given: pass -f NAME or run inside a git repository with a deis remote", "config")
}

// tlsServer serves h over TLS with a certificate of the cluster's CA,
// requiring deisctl's (the build log endpoint of the coordinator).
func (c *cluster) tlsServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = c.ca.ServerTLS("deis:coordinator")
	srv.StartTLS()
	c.t.Cleanup(srv.Close)
	return srv
}
