package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/agent/node"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/harness"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestNodeAccess: least privilege for nodes, on a platform with the CA,
// etcd with TLS, client certificates and auth, and agents that joined with
// one-time tokens. One node's credentials cannot write another node's keys
// or any desired state; expired and reused tokens are refused and change
// nothing; a removed node gets no more work and its containers are
// re-placed; plain HTTP and clients of another CA are refused by etcd.
func TestNodeAccess(t *testing.T) {
	p := harness.NewPlatform(t)
	ttl := []string{"--heartbeat-ttl", "3s"}
	a := p.StartAgent("acc-a", harness.AgentOptions{ExtraArgs: ttl})
	b := p.StartAgent("acc-b", harness.AgentOptions{Addr: "127.0.0.41", Labels: "role=runtime", ExtraArgs: ttl})
	k := state.NewKeys("")
	deploy(t, p, "acc")
	p.WaitApp(a, "acc.localhost", "hello from acc (v1)", 3*time.Minute)

	t.Run("a node writes only its own keys", func(t *testing.T) {
		cli := p.ClientAs(filepath.Join(a.StateDir, "credentials"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, key := range []string{
			k.Runtime(b.Name), k.NodeStatus(b.Name), k.Node(b.Name), k.Heartbeat(b.Name), k.Drain(b.Name),
			k.Runtime(a.Name), // its own databag: the scheduler's to write
			k.Formation("acc"), k.Config("acc"), k.Release("acc", 99), k.Routing("acc"), k.Layer("acc", "web"),
			k.User("eve"), k.Perm("acc", "eve"), k.SSHKey("SHA256:eve"), k.Installation(), k.Coordinator(),
			k.ProxyAck("acc", b.Name), jointoken.MemberKey("", "eve"),
		} {
			_, err := cli.Put(ctx, key, `{"evil":true}`)
			if !etcdauth.IsPermissionDenied(err) {
				t.Errorf("node %s wrote %s: err = %v, want permission denied", a.Name, key, err)
			}
		}
		if _, err := cli.Delete(ctx, k.NodeStatus(b.Name)); !etcdauth.IsPermissionDenied(err) {
			t.Errorf("node %s deleted %s's status: err = %v", a.Name, b.Name, err)
		}
		if _, err := cli.Get(ctx, k.Runtime(b.Name)); !etcdauth.IsPermissionDenied(err) {
			t.Errorf("node %s read %s's databag: err = %v", a.Name, b.Name, err)
		}
		// Releases hold config (secrets): a node reads none, not even of a
		// formation it runs (a one-off's spec comes from its own databag).
		for what, get := range map[string]func() error{
			"acc's release v1":       func() error { _, err := cli.Get(ctx, k.Release("acc", 1)); return err },
			"acc's releases":         func() error { _, err := cli.Get(ctx, k.Releases("acc"), clientv3.WithPrefix()); return err },
			"every release":          func() error { _, err := cli.Get(ctx, k.AllReleases(), clientv3.WithPrefix()); return err },
			"acc's release status":   func() error { _, err := cli.Get(ctx, k.ReleaseStatus("acc", 1)); return err },
			"acc's release statuses": func() error { _, err := cli.Get(ctx, k.ReleaseStatuses("acc"), clientv3.WithPrefix()); return err },
		} {
			if err := get(); !etcdauth.IsPermissionDenied(err) {
				t.Errorf("node %s read %s: err = %v, want permission denied", a.Name, what, err)
			}
		}
		// Its own status it may write (the agent does so all the time).
		r, err := cli.Get(ctx, k.NodeStatus(a.Name))
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("read own status: %v", err)
		}
		if _, err := cli.Put(ctx, k.NodeStatus(a.Name), string(r.Kvs[0].Value)); err != nil {
			t.Errorf("node %s may not write its own status: %v", a.Name, err)
		}
	})

	t.Run("a proxy reads only the formations it proxies", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Formation accy: a proxy layer selecting no node, a routing
		// databag and a certificate; a proxies acc only.
		admin := state.NewStore(p.Client(), "")
		if err := admin.CreateFormation(ctx, &state.Formation{Name: "accy"}); err != nil {
			t.Fatal(err)
		}
		layer := state.Layer{Formation: "accy", Name: "edge", Type: state.LayerProxy, Selector: map[string]string{"role": "nowhere"}}
		if err := admin.Put(ctx, k.Layer("accy", "edge"), layer); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{k.Routing("accy"), k.Cert("accy", "www"), k.ACMEChallenge("accy", "tok")} {
			if _, err := p.Client().Put(ctx, key, `{"formation":"accy"}`); err != nil {
				t.Fatal(err)
			}
		}
		cli := p.ClientAs(filepath.Join(a.StateDir, "credentials"))
		if _, err := cli.Get(ctx, k.Routing("acc")); err != nil {
			t.Errorf("node %s cannot read the routing of acc, which it proxies: %v", a.Name, err)
		}
		for what, get := range map[string]func() error{
			"accy's routing":         func() error { _, err := cli.Get(ctx, k.Routing("accy")); return err },
			"accy's certificate":     func() error { _, err := cli.Get(ctx, k.Cert("accy", "www")); return err },
			"accy's certificates":    func() error { _, err := cli.Get(ctx, k.Certs("accy"), clientv3.WithPrefix()); return err },
			"accy's ACME challenges": func() error { _, err := cli.Get(ctx, k.ACMEChallenges("accy"), clientv3.WithPrefix()); return err },
			"every routing databag":  func() error { _, err := cli.Get(ctx, k.Routings(), clientv3.WithPrefix()); return err },
			"every certificate":      func() error { _, err := cli.Get(ctx, k.AllCerts(), clientv3.WithPrefix()); return err },
		} {
			if err := get(); !etcdauth.IsPermissionDenied(err) {
				t.Errorf("node %s, proxying acc only, read %s: err = %v, want permission denied", a.Name, what, err)
			}
		}
		// The grant follows the layer: once accy's proxy layer selects
		// a, a may read accy's routing.
		if _, err := p.Client().Delete(ctx, k.Cert("accy", "www")); err != nil {
			t.Fatal(err)
		}
		layer.Selector = map[string]string{"role": "proxy"}
		if err := admin.Put(ctx, k.Layer("accy", "edge"), layer); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, time.Minute, "node a granted accy's routing", func() (bool, string) {
			_, err := cli.Get(ctx, k.Routing("accy"))
			return err == nil, fmt.Sprint(err)
		})
		if _, err := p.Client().Delete(ctx, k.Layer("accy", "edge")); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, time.Minute, "node a no longer granted accy's routing", func() (bool, string) {
			_, err := cli.Get(ctx, k.Routing("accy"))
			return etcdauth.IsPermissionDenied(err), fmt.Sprint(err)
		})
	})

	t.Run("expired and reused tokens are refused", func(t *testing.T) {
		// Expired: the agent refuses to start and says what to do.
		flags := p.JoinToken("acc-x", "role=runtime")
		time.Sleep(1500 * time.Millisecond)
		out := p.MustCtl("", "nodes:add", "acc-y", "--labels", "role=runtime", "--ttl", "1s")
		if !strings.Contains(out, "--join") || !strings.Contains(out, "--ca-fingerprint sha256:") {
			t.Errorf("nodes:add does not print the join command:\n%s", out)
		}
		time.Sleep(1500 * time.Millisecond)
		tok := strings.Fields(out[strings.Index(out, "--join"):])[1]
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(harness.Binaries(t), "deis-agent"), "--name", "acc-y", "--state-dir", dir,
			"--join", tok, "--coordinator", flags[3], "--ca-fingerprint", flags[5])
		msg, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(msg), "expired") || !strings.Contains(string(msg), "deisctl nodes:add acc-y") {
			t.Errorf("agent with an expired token: err=%v\n%s", err, msg)
		}
		if _, err := os.Stat(filepath.Join(dir, "credentials", "client.crt")); err == nil {
			t.Error("a refused join wrote credentials")
		}
		st := state.NewStore(p.Client(), "")
		var m jointoken.Member
		if _, err := st.Get(ctx, jointoken.MemberKey("", "acc-y"), &m); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("a refused join left a record: %v %+v", err, m)
		}

		// Reused: the first join wins, the second is refused.
		flags = p.JoinToken("acc-z", "role=runtime")
		cfg := node.JoinConfig{Token: flags[1], Coordinator: flags[3], Fingerprint: flags[5], Node: "acc-z", Prefix: state.DefaultPrefix}
		cfg.Dir = t.TempDir()
		if _, err := node.Join(ctx, cfg); err != nil {
			t.Fatalf("first join: %v", err)
		}
		cfg.Dir = t.TempDir()
		_, err = node.Join(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "already used") || !strings.Contains(err.Error(), "nodes:add acc-z") {
			t.Errorf("second join with one token: %v", err)
		}
		// A wrong fingerprint: the coordinator is not trusted.
		cfg.Fingerprint = "sha256:" + strings.Repeat("0", 64)
		if _, err := node.Join(ctx, cfg); err == nil || !strings.Contains(err.Error(), "fingerprint") {
			t.Errorf("join pinned to another CA: %v", err)
		}
		p.MustCtl("", "nodes:remove", "acc-z")
	})

	t.Run("a removed node gets no more work", func(t *testing.T) {
		p.MustCtl("", "scale", "web=2", "-f", "acc")
		harness.Eventually(t, 3*time.Minute, "one ready container on each node", func() (bool, string) {
			c, out := readyCount(p, "acc")
			return c[a.Name] == 1 && c[b.Name] == 1, out
		})
		out := p.MustCtl("", "nodes:remove", b.Name)
		if !strings.Contains(out, "revoked") {
			t.Errorf("nodes:remove says:\n%s", out)
		}
		harness.Eventually(t, 2*time.Minute, "both containers on the remaining node", func() (bool, string) {
			c, out := readyCount(p, "acc")
			return c[a.Name] == 2 && c[b.Name] == 0, out
		})
		if out := p.MustCtl("", "nodes:list"); !strings.Contains(out, "lost") {
			t.Errorf("nodes:list should show the removed node lost:\n%s", out)
		}
		p.WaitApp(a, "acc.localhost", "hello from acc (v1)", 30*time.Second)
		// Removing it again changes nothing and says why.
		if out, err := p.Ctl("", "nodes:remove", b.Name); err == nil || !strings.Contains(out, "has not joined") {
			t.Errorf("second nodes:remove: %v\n%s", err, out)
		}
		// Its restarted agent is refused by etcd, with the fix.
		b.Restart()
		harness.Eventually(t, time.Minute, "the removed node's agent to be refused", func() (bool, string) {
			return b.Exited() && strings.Contains(b.Log(), "revoked"), b.Log()
		})
	})

	t.Run("plain HTTP and another CA are refused", func(t *testing.T) {
		plain := strings.Replace(p.EtcdURL, "https://", "http://", 1)
		hc := &http.Client{Timeout: 5 * time.Second}
		if resp, err := hc.Get(plain + "/version"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Errorf("etcd answered plain HTTP: %s", resp.Status)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pc, err := clientv3.New(clientv3.Config{Endpoints: []string{plain}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
		if err == nil {
			defer pc.Close()
			if _, err := pc.Get(ctx, k.Formation("acc")); err == nil {
				t.Error("a plain gRPC client read from etcd")
			}
		}
		// A certificate named root, from another CA.
		other, err := pki.Create(filepath.Join(t.TempDir(), "pki"), "evil CA", 0)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := other.IssueClient("root", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		real, err := pki.Load(p.CACert, p.CAKey)
		if err != nil {
			t.Fatal(err)
		}
		fc, err := clientv3.New(clientv3.Config{Endpoints: []string{p.EtcdURL}, DialTimeout: 3 * time.Second, Logger: zap.NewNop(),
			TLS: pki.ClientTLS(&pki.Verifier{CA: real}, leaf)})
		if err == nil {
			defer fc.Close()
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			if _, err := fc.Put(cctx, k.Formation("evil"), "{}"); err == nil {
				t.Error("a client of another CA wrote to etcd")
			}
		}
		// deisctl with that certificate says what is wrong.
		dir := t.TempDir()
		cp, kp, err := leaf.WriteFiles(dir, "client")
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(harness.Binaries(t), "deisctl"), "--etcd-endpoints", p.EtcdURL,
			"--etcd-cacert", p.CACert, "--etcd-cert", cp, "--etcd-key", kp, "--timeout", "10s", "formations:list").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "refused this client certificate") {
			t.Errorf("deisctl with a foreign certificate: %v\n%s", err, out)
		}
		t.Logf("deisctl with a foreign certificate: %s", strings.TrimSpace(string(out)))
	})
}
