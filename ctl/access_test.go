package ctl

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdauth/authtest"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/ssh"
)

// secured is a real etcd with TLS, client certificates and auth on, whose
// users and roles follow the records as the leading coordinator's loop
// keeps them (sync here).
type secured struct {
	t     *testing.T
	cl    *authtest.Cluster
	store *state.Store // as root
}

func newSecured(t *testing.T) *secured {
	t.Helper()
	s := &secured{t: t, cl: authtest.Start(t)}
	s.store = state.NewStore(s.cl.Root, "")
	s.sync()
	return s
}

// sync converges etcd's users and roles to the records, as the
// coordinator's loop does; the bootstrap administrator counts while it has
// no record.
func (s *secured) sync() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := etcdauth.Desired{Users: map[string]etcdauth.UserGrants{}}
	users, _, err := state.List[state.User](ctx, s.store.KV, s.store.Keys.Users())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, u := range users {
		d.Users[state.Base(u.Key)] = etcdauth.UserGrants{Admin: u.Value.Admin}
	}
	if _, ok := d.Users[state.BootstrapAdmin]; !ok {
		d.Users[state.BootstrapAdmin] = etcdauth.UserGrants{Admin: true}
	}
	forms, _, err := state.List[state.Formation](ctx, s.store.KV, s.store.Keys.Formations())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, f := range forms {
		d.Formations = append(d.Formations, state.Base(f.Key))
	}
	perms, _, err := state.List[state.Perm](ctx, s.store.KV, s.store.Keys.AllPerms())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, p := range perms {
		if g, ok := d.Users[p.Value.User]; ok {
			g.Formations = append(g.Formations, p.Value.Formation)
			d.Users[p.Value.User] = g
		}
	}
	if err := etcdauth.Sync(ctx, s.cl.Root, "", d); err != nil {
		s.t.Fatal(err)
	}
}

// deploy releases a build of formation f, as the builder does.
func (s *secured) deploy(f string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := &state.Build{ID: "b1", Formation: f, Image: "deis/stack:bookworm", ProcessTypes: map[string]string{"web": "sleep infinity"},
		Buildpack: "Dockerfile", Created: time.Now().UTC()}
	if err := s.store.Put(ctx, s.store.Keys.Build(f, "b1"), b); err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.store.AppendRelease(ctx, f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: b, Config: map[string]string{}, Description: "Deploy b1"}, nil, nil, nil
	}); err != nil {
		s.t.Fatal(err)
	}
}

// adminCreds writes the bootstrap administrator's credentials directory.
func (s *secured) adminCreds() string {
	s.t.Helper()
	dir := filepath.Join(s.t.TempDir(), "admin")
	if _, err := writeCredentials(s.cl.CA, s.cfg(), state.BootstrapAdmin, dir); err != nil {
		s.t.Fatal(err)
	}
	return dir
}

func (s *secured) cfg() (c etcdconn.Config) {
	c.Endpoints = []string{s.cl.Endpoint}
	return c
}

// as runs deisctl with the credentials in dir.
func (s *secured) as(dir string, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	app := NewApp()
	app.Writer, app.ErrWriter = &out, &errOut
	base := []string{"deisctl", "--etcd-endpoints", s.cl.Endpoint, "--timeout", "20s",
		"--etcd-cacert", filepath.Join(dir, credsCA), "--etcd-cert", filepath.Join(dir, credsCert), "--etcd-key", filepath.Join(dir, credsKey)}
	err := app.Run(append(base, args...))
	return out.String() + errOut.String(), err
}

func (s *secured) ok(dir string, args ...string) string {
	s.t.Helper()
	out, err := s.as(dir, args...)
	if err != nil {
		s.t.Fatalf("deisctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *secured) revision() int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.cl.Root.Get(ctx, "x", clientv3.WithCountOnly())
	if err != nil {
		s.t.Fatal(err)
	}
	return r.Header.Revision
}

// refused runs deisctl, wants it refused with want in one line, and checks
// that nothing was written.
func (s *secured) refused(dir, want string, args ...string) {
	s.t.Helper()
	before := s.revision()
	out, err := s.as(dir, args...)
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		s.t.Errorf("deisctl %s: %v (output %q), want one line with %q", strings.Join(args, " "), err, out, want)
	}
	if after := s.revision(); after != before {
		s.t.Errorf("deisctl %s was refused but wrote (revision %d -> %d)", strings.Join(args, " "), before, after)
	}
}

// users:create writes credentials of the platform CA; with them, deisctl
// may change only the formations granted (etcd refuses the rest, and
// deisctl says so in one line), every one after perms:grant.
func TestUserCredentialsAndGrants(t *testing.T) {
	s := newSecured(t)
	admin := s.adminCreds()
	s.ok(admin, "formations:create", "shop")
	s.ok(admin, "formations:create", "blog")
	for _, f := range []string{"shop", "blog"} {
		s.deploy(f)
		s.ok(admin, "config:set", "A=1", "-f", f)
		s.ok(admin, "config:set", "B=2", "-f", f)
	}

	// Bad input writes nothing.
	caDir := filepath.Join(s.cl.Dir, "pki")
	out := filepath.Join(t.TempDir(), "alice")
	rev := s.revision()
	if _, err := s.as(admin, "users:create", "alice", "--ca", filepath.Join(t.TempDir(), "nope"), "--out", out); err == nil {
		t.Error("users:create with no CA there succeeded")
	}
	if s.revision() != rev {
		t.Error("users:create with a missing CA wrote the user")
	}
	msg := s.ok(admin, "users:create", "alice", "--ca", caDir, "--out", out)
	if !strings.Contains(msg, "written to "+out) {
		t.Errorf("users:create does not say where the credentials are: %s", msg)
	}
	leaf, err := pki.LoadLeaf(filepath.Join(out, credsCert), filepath.Join(out, credsKey))
	if err != nil || leaf.Cert.Subject.CommonName != "deis:user-alice" {
		t.Fatalf("alice's certificate: %v %v", leaf, err)
	}
	if _, err := s.as(admin, "users:create", "bob", "--ca", caDir, "--out", out); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("credentials written over alice's: %v", err)
	}
	s.sync()

	const refusal = "alice may not change blog: ask an administrator for deisctl perms:grant alice -f blog"
	for _, args := range [][]string{
		{"config:set", "X=1", "-f", "blog"},
		{"config:unset", "A", "-f", "blog"},
		{"config", "-f", "blog"},
		{"scale", "web=2", "-f", "blog"},
		{"rollback", "-f", "blog"},
		{"releases", "-f", "blog"},
		{"domains:add", "blog.example.com", "-f", "blog"},
		{"limits:set", "web=256M", "-f", "blog"},
		{"logs", "-f", "blog"},
		{"run", "-f", "blog", "ls"},
		{"perms:grant", "alice", "-f", "blog"},
		{"formations:destroy", "blog", "--confirm", "blog"},
	} {
		s.refused(out, refusal, args...)
	}
	if _, err := s.as(out, "config:set", "X=1", "-f", "blog"); err == nil || err.Error() != refusal || !etcdauth.IsPermissionDenied(err) {
		t.Errorf("the refusal is %q, want exactly %q (wrapping etcd's)", err, refusal)
	}
	s.refused(out, "alice may not", "users:create", "mallory")
	s.refused(out, "alice may not add SSH keys: ask an administrator to run deisctl keys:add PATH.pub --user alice", "keys:add", pubKeyFile(t))

	s.ok(admin, "perms:grant", "alice", "-f", "blog")
	s.sync()
	s.ok(out, "config:set", "X=1", "-f", "blog")
	if got := s.ok(out, "config", "-f", "blog"); !strings.Contains(got, "X") {
		t.Errorf("config after config:set: %s", got)
	}
	s.ok(out, "releases", "-f", "blog")
	s.ok(out, "rollback", "-f", "blog")
	s.ok(out, "scale", "web=2", "-f", "blog")
	s.ok(out, "domains:add", "blog.example.com", "-f", "blog")
	s.ok(out, "limits:set", "web=256M", "-f", "blog")
	// ps and status: alice sees blog's containers, from the agents'
	// reports (the runtime databags, with every formation's env, stay
	// closed to her), and none of shop's.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k := s.store.Keys
	for _, put := range []struct {
		key string
		v   any
	}{
		{k.Node("n1"), state.Node{Name: "n1", Addr: "10.0.0.1"}},
		{k.Heartbeat("n1"), state.Heartbeat{Node: "n1", At: time.Now()}},
		{k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{{Name: "blog-v1-web-1", Formation: "blog", Release: 1, Type: "web"}}}},
		{k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
			{Name: "blog-v1-web-1", Formation: "blog", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:5001"},
			{Name: "shop-v1-web-1", Formation: "shop", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:5002"},
		}}},
	} {
		if err := s.store.Put(ctx, put.key, put.v); err != nil {
			t.Fatal(err)
		}
	}
	got := s.ok(out, "ps", "-f", "blog")
	if !strings.Contains(got, "blog-v1-web-1") || !strings.Contains(got, "10.0.0.1:5001") || strings.Contains(got, "shop") || strings.Contains(got, "retiring") {
		t.Errorf("ps -f blog as alice: %s", got)
	}
	got = s.ok(out, "status", "-f", "blog")
	if !strings.Contains(got, "blog") || strings.Contains(got, "shop") || !strings.Contains(got, "1 registered, 1 up") {
		t.Errorf("status -f blog as alice: %s", got)
	}
	s.refused(out, "alice may not change shop", "ps", "-f", "shop")
	s.refused(out, "alice may not change shop", "status", "-f", "shop")
	// Still nothing on the other formation.
	s.refused(out, "alice may not change shop", "config:set", "X=1", "-f", "shop")
	// Listing: alice sees what she was granted.
	if got := s.ok(out, "formations"); !strings.Contains(got, "blog") || strings.Contains(got, "shop") {
		t.Errorf("formations as alice: %s", got)
	}

	// Revoked: refused again.
	s.ok(admin, "perms:revoke", "alice", "-f", "blog")
	s.sync()
	s.refused(out, refusal, "config:set", "Y=1", "-f", "blog")
	// Removed: nothing at all.
	s.ok(admin, "users:remove", "alice", "--confirm", "alice")
	s.sync()
	if _, err := s.as(out, "config", "-f", "blog"); err == nil {
		t.Error("a removed user still reads")
	}
}

// pubKeyFile writes a new SSH public key and returns its path.
func pubKeyFile(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(pk), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
