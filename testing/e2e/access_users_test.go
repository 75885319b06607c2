package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/harness"
)

// TestUserAccess: on a platform with etcd's auth and TLS on, a user made by
// users:create (a certificate of the platform CA) can change, run in and
// read the logs of no formation until an administrator grants it; every
// attempt is refused in one line and changes nothing; after perms:grant
// they all work, and after perms:revoke they are refused again. The slug
// server and the agent API refuse a missing or a foreign certificate.
func TestUserAccess(t *testing.T) {
	p := harness.NewPlatform(t)
	a := p.StartAgent("e2e-access", harness.AgentOptions{})
	key := p.NewKey("owner")
	p.MustCtl("", "keys:add", key+".pub")
	p.MustCtl("", "formations:create", "shop")
	repo := p.AppRepo("hello", "shop")
	if out, err := p.Git(repo, key, "push", "deis", "main"); err != nil {
		t.Fatalf("git push: %v\n%s", err, out)
	}
	p.WaitApp(a, "shop.localhost", "hello from shop (v1)", 3*time.Minute)

	// users:create writes alice's credentials, signed by the platform CA.
	aliceDir := filepath.Join(p.Dir, "alice")
	out := p.MustCtl("", "users:create", "alice", "--ca", filepath.Dir(p.CACert), "--out", aliceDir)
	if !strings.Contains(out, "written to "+aliceDir) {
		t.Fatalf("users:create does not say where the credentials are:\n%s", out)
	}
	alice := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(harness.Binaries(t), "deisctl"), args...)
		cmd.Dir = p.Dir
		cmd.Env = append(os.Environ(), "DEIS_CREDENTIALS="+aliceDir)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	const refusal = "alice may not change shop: ask an administrator for deisctl perms:grant alice -f shop"
	// The access loop makes alice's etcd user: until then etcd refuses her
	// certificate altogether.
	harness.Eventually(t, time.Minute, "alice's etcd user", func() (bool, string) {
		out, _ := alice("config", "-f", "shop")
		return strings.Contains(out, refusal), out
	})

	// Ungranted: every write, run and logs is refused in one line, and
	// nothing changes.
	before := p.MustCtl("", "releases", "-f", "shop")
	for _, args := range [][]string{
		{"config:set", "SECRET=x", "-f", "shop"},
		{"config:unset", "GREETING", "-f", "shop"},
		{"scale", "web=2", "-f", "shop"},
		{"rollback", "-f", "shop"},
		{"limits:set", "web=256M", "-f", "shop"},
		{"domains:add", "shop.example.com", "-f", "shop"},
		{"run", "-f", "shop", "--", "echo", "in"},
		{"logs", "-f", "shop"},
		{"releases", "-f", "shop"},
		{"formations:destroy", "shop", "--confirm", "shop"},
		{"perms:grant", "alice", "-f", "shop"},
		{"ps", "-f", "shop"},
		{"status", "-f", "shop"},
	} {
		out, err := alice(args...)
		msg := strings.TrimSpace(out)
		if err == nil || !strings.Contains(msg, refusal) || strings.Count(msg, "\n") != 0 {
			t.Errorf("deisctl %s as alice: %v\n%s\nwant one line with %q", strings.Join(args, " "), err, out, refusal)
		} else {
			t.Logf("deisctl %s as alice: %s", strings.Join(args, " "), msg)
		}
	}
	if out, err := alice("keys:add", key+".pub"); err == nil || !strings.Contains(out, "alice may not add SSH keys") {
		t.Errorf("keys:add as alice: %v\n%s", err, out)
	}
	if out, err := alice("formations"); err != nil || strings.Contains(out, "shop") {
		t.Errorf("formations as alice (granted none): %v\n%s", err, out)
	}
	if after := p.MustCtl("", "releases", "-f", "shop"); after != before {
		t.Errorf("refused commands changed the releases:\n%s\n->\n%s", before, after)
	}
	if cfg := p.MustCtl("", "config", "-f", "shop"); strings.Contains(cfg, "SECRET") {
		t.Errorf("a refused config:set landed:\n%s", cfg)
	}

	// The agent API and the slug server: no certificate, a foreign CA's
	// certificate, plain HTTP, and a user at the slug server are refused.
	agentURL, slugURL := agentAndSlugURLs(t, p, a.Name)
	foreignDir := t.TempDir()
	foreign, err := pki.Create(foreignDir, "not the platform CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	foreignAdmin, err := foreign.IssueClient("deis:user-admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	aliceLeaf, err := pki.LoadLeaf(filepath.Join(aliceDir, "client.crt"), filepath.Join(aliceDir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	insecure := func(cert *pki.Leaf) *http.Client {
		c := &tls.Config{InsecureSkipVerify: true} // the server's side is what is tested
		if cert != nil {
			c.Certificates = []tls.Certificate{cert.TLSCertificate()}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
	}
	for name, url := range map[string]string{"agent API": agentURL + "/logs?formation=shop", "slug server": slugURL} {
		for who, c := range map[string]*http.Client{"no certificate": insecure(nil), "a foreign CA's certificate": insecure(foreignAdmin)} {
			if resp, err := c.Get(url); err == nil {
				resp.Body.Close()
				t.Errorf("%s with %s: %s, want the handshake refused", name, who, resp.Status)
			}
		}
		if resp, err := http.Get(strings.Replace(url, "https://", "http://", 1)); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s over plain HTTP: %s %.100q", name, resp.Status, body)
			}
		}
	}
	if resp, err := insecure(aliceLeaf).Get(slugURL); err != nil || resp.StatusCode != http.StatusForbidden {
		if resp != nil {
			resp.Body.Close()
		}
		t.Errorf("a user's certificate at the slug server: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}

	// Granted: everything works.
	p.MustCtl("", "perms:grant", "alice", "-f", "shop")
	harness.Eventually(t, time.Minute, "alice's grant applied", func() (bool, string) {
		out, err := alice("config:set", "FROM_ALICE=yes", "-f", "shop")
		return err == nil, out
	})
	for _, args := range [][]string{
		{"config", "-f", "shop"},
		{"releases", "-f", "shop"},
		{"limits:set", "web=256M", "-f", "shop"},
		{"scale", "web=1", "-f", "shop"},
		{"rollback", "-f", "shop"},
		{"domains:add", "shop.example.com", "-f", "shop"},
	} {
		if out, err := alice(args...); err != nil {
			t.Errorf("deisctl %s as alice, granted: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := alice("formations"); err != nil || !strings.Contains(out, "shop") {
		t.Errorf("formations as alice (granted shop): %v\n%s", err, out)
	}
	harness.Eventually(t, 2*time.Minute, "a one-off run as alice", func() (bool, string) {
		out, err := alice("run", "-f", "shop", "--", "echo", "ran-as-alice")
		if err == nil {
			t.Logf("deisctl run as alice, granted: %s", strings.TrimSpace(out))
		}
		return err == nil && strings.Contains(out, "ran-as-alice"), out
	})
	// ps and status of her formation: its web container, from the agents'
	// reports (alice reads no runtime databag).
	harness.Eventually(t, 2*time.Minute, "ps as alice", func() (bool, string) {
		out, err := alice("ps", "-f", "shop")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); err == nil && len(f) > 4 && strings.HasPrefix(f[0], "shop") && f[1] == "web" && f[3] == a.Name {
				t.Logf("deisctl ps as alice, granted:\n%s", out)
				return true, out
			}
		}
		return false, out
	})
	if out, err := alice("status", "-f", "shop"); err != nil || !strings.Contains(out, "shop") {
		t.Errorf("status as alice, granted: %v\n%s", err, out)
	}
	harness.Eventually(t, time.Minute, "logs as alice", func() (bool, string) {
		out, err := alice("logs", "-f", "shop", "-n", "50")
		return err == nil && strings.Contains(out, "shop"), out
	})

	// Revoked: refused again.
	p.MustCtl("", "perms:revoke", "alice", "-f", "shop")
	harness.Eventually(t, time.Minute, "alice's grant taken back", func() (bool, string) {
		out, err := alice("config:set", "AGAIN=1", "-f", "shop")
		return err != nil && strings.Contains(out, refusal), out
	})
	if out, err := alice("run", "-f", "shop", "--", "echo", "x"); err == nil || !strings.Contains(out, refusal) {
		t.Errorf("run after perms:revoke: %v\n%s", err, out)
	}
}

// agentAndSlugURLs are the node's agent API URL and the URL of a slug of
// the platform (the newest build's), read as the administrator.
func agentAndSlugURLs(t *testing.T, p *harness.Platform, node string) (string, string) {
	t.Helper()
	cli := p.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k := state.NewKeys("")
	var n state.Node
	resp, err := cli.Get(ctx, k.Node(node))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("node %s: %v", node, err)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil {
		t.Fatal(err)
	}
	builds, _, err := state.List[state.Build](ctx, cli, k.Builds("shop"))
	if err != nil || len(builds) == 0 || builds[0].Value.Slug == nil {
		t.Fatalf("shop's build: %v %+v", err, builds)
	}
	return n.APIURL, fmt.Sprintf("https://127.0.0.1:%d/slugs/%s.tgz", p.HTTPPort, builds[0].Value.Slug.SHA256)
}
