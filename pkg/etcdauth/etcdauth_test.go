package etcdauth_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdauth/authtest"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const prefix = "/deis"

var keys = state.NewKeys(prefix)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, c *clientv3.Client, key string) {
	t.Helper()
	if _, err := c.Put(ctxT(t), key, "{}"); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// allowed and denied check what etcd itself says about one operation.
func allowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: refused: %v", what, err)
	}
}

func denied(t *testing.T, what string, err error) {
	t.Helper()
	if !etcdauth.IsPermissionDenied(err) {
		t.Errorf("%s: want permission denied, got %v", what, err)
	}
}

func put(c *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Put(ctx, key, "{}")
	return err
}

func get(c *clientv3.Client, key string, opts ...clientv3.OpOption) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Get(ctx, key, opts...)
	return err
}

// TestNodeWritesOnlyItsOwnKeys: with node a's certificate, etcd lets it
// write its registration, heartbeat, status and proxy acks and read its own
// databag, and refuses node b's databag and status and every desired-state
// key.
func TestNodeWritesOnlyItsOwnKeys(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	names := etcdauth.NewNames(prefix)
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "a", etcdauth.NodeOptions{Proxy: true, ProxyFormations: []string{"shop"}, Serves: []string{"shop"}}); err != nil {
		t.Fatal(err)
	}
	// Twice: idempotent.
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "a", etcdauth.NodeOptions{Proxy: true, ProxyFormations: []string{"shop"}, Serves: []string{"shop"}}); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "b", etcdauth.NodeOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{keys.Runtime("a"), keys.Runtime("b"), keys.Formation("shop"), keys.Config("shop"),
		keys.Routing("shop"), keys.Installation(), keys.Coordinator(), keys.NodeStatus("b"), keys.Node("b")} {
		mustPut(t, cl.Root, k)
	}
	a := cl.Client(t, names.Node("a"))

	// Its own keys.
	allowed(t, "etcdconn's health check", get(a, etcdauth.HealthKey(prefix), clientv3.WithCountOnly()))
	allowed(t, "put own registration", put(a, keys.Node("a")))
	lease, err := a.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Put(ctx, keys.Heartbeat("a"), "{}", clientv3.WithLease(lease.ID))
	allowed(t, "put own heartbeat with a lease", err)
	allowed(t, "put own status", put(a, keys.NodeStatus("a")))
	allowed(t, "put own proxy ack", put(a, keys.ProxyAck("shop", "a")))
	allowed(t, "put own traffic report", put(a, keys.TrafficOf("shop", "a")))
	allowed(t, "get own databag", get(a, keys.Runtime("a")))
	allowed(t, "list nodes", get(a, keys.Nodes(), clientv3.WithPrefix()))
	allowed(t, "list layers", get(a, keys.AllLayers(), clientv3.WithPrefix()))
	allowed(t, "read a formation", get(a, keys.Formation("shop")))
	allowed(t, "read coordinator info", get(a, keys.Coordinator()))
	// Routing, certificates and challenges of the formations it serves only.
	allowed(t, "read shop's routing (served)", get(a, keys.Routing("shop")))
	allowed(t, "list shop's certs (served)", get(a, keys.Certs("shop"), clientv3.WithPrefix()))
	allowed(t, "list shop's ACME challenges (served)", get(a, keys.ACMEChallenges("shop"), clientv3.WithPrefix()))
	denied(t, "list every routing databag", get(a, keys.Routings(), clientv3.WithPrefix()))
	denied(t, "list every cert", get(a, keys.AllCerts(), clientv3.WithPrefix()))
	denied(t, "list every ACME challenge", get(a, keys.AllACMEChallenges(), clientv3.WithPrefix()))
	denied(t, "read other's routing (not served)", get(a, keys.Routing("other")))
	denied(t, "read shopping's routing (name starts the same)", get(a, keys.Routing("shopping")))
	denied(t, "list other's certs (not served)", get(a, keys.Certs("other"), clientv3.WithPrefix()))
	denied(t, "read a cert of other", get(a, keys.Cert("other", "x")))
	denied(t, "list other's ACME challenges", get(a, keys.ACMEChallenges("other"), clientv3.WithPrefix()))
	_, err = a.Revoke(ctx, lease.ID)
	allowed(t, "revoke own heartbeat's lease", err)

	// Other nodes' keys.
	denied(t, "put node b's registration", put(a, keys.Node("b")))
	denied(t, "put node b's heartbeat", put(a, keys.Heartbeat("b")))
	denied(t, "put node b's status", put(a, keys.NodeStatus("b")))
	denied(t, "put node b's databag", put(a, keys.Runtime("b")))
	denied(t, "read node b's databag", get(a, keys.Runtime("b")))
	denied(t, "list every databag", get(a, keys.Runtimes(), clientv3.WithPrefix()))
	// Acks are keyed by node first: a proxy writes under its own prefix,
	// whatever the formation (an ack of a formation it does not route
	// counts for nothing).
	allowed(t, "put an ack under its own prefix", put(a, keys.ProxyAck("other", "a")))
	denied(t, "put node b's ack", put(a, keys.ProxyAck("shop", "b")))
	// Desired state, its own databag included.
	for _, k := range []string{keys.Runtime("a"), keys.Routing("shop"), keys.Formation("shop"), keys.Config("shop"),
		keys.Release("shop", 1), keys.Layer("shop", "web"), keys.Build("shop", "x"), keys.Cert("shop", "x"),
		keys.User("eve"), keys.Perm("shop", "eve"), keys.SSHKey("x"), keys.Drain("b"), keys.Coordinator(),
		keys.Installation(), keys.FormationStatus("shop"), keys.ReleaseStatus("shop", 1), keys.NextUID()} {
		denied(t, "put "+k, put(a, k))
	}
	denied(t, "read a config", get(a, keys.Config("shop")))
	// Releases hold config: a node reads none (a one-off's spec comes from
	// its own runtime databag).
	denied(t, "read a release", get(a, keys.Release("shop", 1)))
	denied(t, "list shop's releases", get(a, keys.Releases("shop"), clientv3.WithPrefix()))
	denied(t, "list every release", get(a, keys.AllReleases(), clientv3.WithPrefix()))
	denied(t, "read a release status", get(a, keys.ReleaseStatus("shop", 1)))
	denied(t, "list every release status", get(a, keys.ReleaseStatuses("shop"), clientv3.WithPrefix()))
	// The agent API decides who may read logs and run from these records.
	allowed(t, "read users", get(a, keys.Users(), clientv3.WithPrefix()))
	allowed(t, "read grants", get(a, keys.AllPerms(), clientv3.WithPrefix()))
	_, err = a.Delete(ctx, keys.Nodes(), clientv3.WithPrefix())
	denied(t, "delete every node", err)
	// One denied op in a transaction refuses it all.
	_, err = a.Txn(ctx).Then(clientv3.OpPut(keys.NodeStatus("a"), "{}"), clientv3.OpPut(keys.NodeStatus("b"), "{}")).Commit()
	denied(t, "transaction writing its own and b's status", err)
	// A watch on every databag is refused too.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	wr := <-a.Watch(wctx, keys.Runtimes(), clientv3.WithPrefix())
	denied(t, "watch every databag", wr.Err())

	// Node b is no proxy: no routing, no acks.
	b := cl.Client(t, names.Node("b"))
	allowed(t, "b puts its status", put(b, keys.NodeStatus("b")))
	denied(t, "b (no proxy) lists routing", get(b, keys.Routings(), clientv3.WithPrefix()))
	denied(t, "b (no proxy) puts an ack", put(b, keys.ProxyAck("shop", "b")))

	// EnsureNode converges: a, no longer a proxy, loses the proxy grants.
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "a", etcdauth.NodeOptions{}); err != nil {
		t.Fatal(err)
	}
	denied(t, "a, no longer a proxy, reads shop's routing", get(a, keys.Routing("shop")))
	denied(t, "a, no longer a proxy, puts its ack", put(a, keys.ProxyAck("shop", "a")))
	allowed(t, "a still puts its status", put(a, keys.NodeStatus("a")))

	// A node given the retired legacy role (every formation's releases)
	// loses it when EnsureNode converges.
	if err := etcdauth.EnsureRole(ctx, cl.Root, names.LegacyNodes(), []etcdauth.Perm{{Key: keys.AllReleases(), Prefix: true, Type: clientv3.PermissionType(clientv3.PermRead)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Root.UserGrantRole(ctx, names.Node("a"), names.LegacyNodes()); err != nil {
		t.Fatal(err)
	}
	allowed(t, "legacy role: read a release", get(a, keys.Release("shop", 1)))
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "a", etcdauth.NodeOptions{}); err != nil {
		t.Fatal(err)
	}
	denied(t, "legacy role taken away: read a release", get(a, keys.Release("shop", 1)))

	// Removed: refused at once, on the connection already open.
	if err := etcdauth.RemoveNode(ctx, cl.Root, prefix, "a"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.RemoveNode(ctx, cl.Root, prefix, "a"); err != nil {
		t.Fatalf("RemoveNode twice: %v", err)
	}
	if err := put(a, keys.NodeStatus("a")); err == nil {
		t.Fatal("removed node still writes its status")
	}
	allowed(t, "b unaffected", put(b, keys.NodeStatus("b")))
}

// TestUserNeedsFormationGrant: alice cannot change formation shop until it
// is granted, can then, and cannot once it is revoked; she never reaches
// another formation.
func TestUserNeedsFormationGrant(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	names := etcdauth.NewNames(prefix)
	if err := etcdauth.GrantFormation(ctx, cl.Root, prefix, "alice", "shop"); err == nil || !strings.Contains(err.Error(), "users:create") {
		t.Fatalf("grant to a user that does not exist: %v", err)
	}
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "alice", etcdauth.UserOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "alice", etcdauth.UserOptions{}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, cl.Root, keys.Formation("shop"))
	mustPut(t, cl.Root, keys.Formation("other"))
	alice := cl.Client(t, names.User("alice"))

	allowed(t, "alice's health check", get(alice, etcdauth.HealthKey(prefix), clientv3.WithCountOnly()))
	allowed(t, "alice reads coordinator info", get(alice, keys.Coordinator()))
	denied(t, "alice sets shop's config before the grant", put(alice, keys.Config("shop")))
	if err := etcdauth.Denied(put(alice, keys.Config("shop")), "alice", "shop"); !strings.HasPrefix(err.Error(), "alice may not change shop: ask an administrator for deisctl perms:grant alice -f shop") {
		t.Errorf("Denied: %v", err)
	}
	denied(t, "alice scales shop before the grant", put(alice, keys.Formation("shop")))
	denied(t, "alice reads shop's config before the grant", get(alice, keys.Config("shop")))

	if err := etcdauth.GrantFormation(ctx, cl.Root, prefix, "alice", "shop"); err != nil {
		t.Fatal(err)
	}
	allowed(t, "alice sets shop's config", put(alice, keys.Config("shop")))
	allowed(t, "alice scales shop", put(alice, keys.Formation("shop")))
	allowed(t, "alice appends a release of shop", put(alice, keys.Release("shop", 2)))
	allowed(t, "alice adds a certificate to shop", put(alice, keys.Cert("shop", "www")))
	allowed(t, "alice lists shop's builds", get(alice, keys.Builds("shop"), clientv3.WithPrefix()))
	denied(t, "alice writes a build of shop (the builder's)", put(alice, keys.Build("shop", "x")))
	denied(t, "alice grants herself push (perms)", put(alice, keys.Perm("shop", "alice")))
	denied(t, "alice writes shop's routing (the scheduler's)", put(alice, keys.Routing("shop")))
	allowed(t, "alice reads the agents' reports (ps, status)", get(alice, keys.NodeStatuses(), clientv3.WithPrefix()))
	denied(t, "alice reads the runtime databags (every formation's env)", get(alice, keys.Runtimes(), clientv3.WithPrefix()))
	denied(t, "alice reads a node's runtime databag", get(alice, keys.Runtime("a")))
	denied(t, "alice sets other's config", put(alice, keys.Config("other")))
	denied(t, "alice scales other", put(alice, keys.Formation("other")))
	denied(t, "alice writes shopping's layers (prefix trap)", put(alice, keys.Layer("shopping", "web")))
	denied(t, "alice makes herself admin", put(alice, keys.User("alice")))
	denied(t, "alice adds an SSH key", put(alice, keys.SSHKey("x")))
	// The release log's transaction, as config:set runs it.
	_, err := alice.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(keys.Formation("shop")), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(keys.Release("shop", 3)), "=", 0),
	).Then(clientv3.OpPut(keys.Release("shop", 3), "{}"), clientv3.OpPut(keys.Config("shop"), "{}")).Commit()
	allowed(t, "alice's config:set transaction", err)

	if err := etcdauth.RevokeFormation(ctx, cl.Root, prefix, "alice", "shop"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.RevokeFormation(ctx, cl.Root, prefix, "alice", "shop"); err != nil {
		t.Fatalf("revoke twice: %v", err)
	}
	denied(t, "alice sets shop's config after the revoke", put(alice, keys.Config("shop")))

	// An admin does everything under the prefix, but cannot manage etcd's
	// users: that stays with root.
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "bob", etcdauth.UserOptions{Admin: true}); err != nil {
		t.Fatal(err)
	}
	bob := cl.Client(t, names.User("bob"))
	allowed(t, "admin sets other's config", put(bob, keys.Config("other")))
	allowed(t, "admin writes a user", put(bob, keys.User("carol")))
	denied(t, "admin writes outside the prefix", put(bob, "/elsewhere/x"))
	_, err = bob.UserAdd(ctx, "mallory", "pw")
	denied(t, "admin adds an etcd user", err)
	// Demoted: admin taken away by EnsureUser without Admin.
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "bob", etcdauth.UserOptions{}); err != nil {
		t.Fatal(err)
	}
	denied(t, "demoted admin sets other's config", put(bob, keys.Config("other")))

	// Destroying the formation removes its role from everyone.
	if err := etcdauth.GrantFormation(ctx, cl.Root, prefix, "alice", "shop"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.RemoveFormation(ctx, cl.Root, prefix, "shop"); err != nil {
		t.Fatal(err)
	}
	denied(t, "alice after shop's role is removed", put(alice, keys.Config("shop")))
	if err := etcdauth.RemoveUser(ctx, cl.Root, prefix, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := get(alice, keys.Coordinator()); err == nil {
		t.Fatal("removed user still reads")
	}
}

// TestPasswordUser: a user with a password (for an etcd without client
// certificate authentication, or next to one) authenticates with it; a wrong
// password is refused.
func TestPasswordUser(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "dave", etcdauth.UserOptions{Password: "s3cret-pw"}); err != nil {
		t.Fatal(err)
	}
	// The connection still needs a certificate of the CA (client-cert-auth);
	// the password's user takes precedence over the certificate's CN.
	leaf, _ := cl.CA.IssueClient("nobody", time.Hour)
	dial := func(pw string) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{cl.Endpoint}, DialTimeout: 5 * time.Second,
			TLS: pki.ClientTLS(cl.Verifier, leaf), Username: etcdauth.NewNames(prefix).User("dave"), Password: pw, Logger: zap.NewNop()})
	}
	c, err := dial("s3cret-pw")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allowed(t, "dave reads coordinator info", get(c, keys.Coordinator()))
	denied(t, "dave writes a config", put(c, keys.Config("shop")))
	bad, err := dial("wrong")
	if err == nil {
		err = get(bad, keys.Coordinator())
		bad.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
}

// TestForeignCertificateRefused: etcd refuses a client certificate from
// another CA, even one naming root, and a client with none; a client that
// trusts another CA refuses etcd.
func TestForeignCertificateRefused(t *testing.T) {
	cl := authtest.Start(t)
	other, err := pki.Create(t.TempDir()+"/other", "evil CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.IssueClient(etcdauth.Root, time.Hour)
	u, _ := url.Parse(cl.Endpoint)

	// At the TLS level: the handshake (or, with TLS 1.3, the first read)
	// fails with a certificate alert.
	handshake := func(cfg *tls.Config) error {
		cfg.ServerName = u.Hostname()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", u.Host, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // accepted: etcd waits for the client to speak
		}
		return err
	}
	good, _ := cl.CA.IssueClient("x", time.Hour)
	if err := handshake(pki.ClientTLS(cl.Verifier, good)); err != nil {
		t.Fatalf("certificate of the platform CA: %v", err)
	}
	err = handshake(pki.ClientTLS(cl.Verifier, forged))
	if err == nil || !strings.Contains(pki.Explain(err).Error(), "from another CA") {
		t.Fatalf("forged root certificate from another CA: %v", err)
	}
	if err := handshake(pki.ClientTLS(cl.Verifier, nil)); err == nil {
		t.Fatal("client without certificate accepted")
	}
	expired, err := cl.CA.Issue(pki.Request{CommonName: etcdauth.Root, Usage: pki.Client, NotBefore: time.Now().Add(-2 * time.Hour), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(pki.ClientTLS(cl.Verifier, expired)); err == nil {
		t.Fatal("expired root certificate of the platform CA accepted")
	}
	err = handshake(pki.ClientTLS(&pki.Verifier{CA: other}, forged))
	if !errors.Is(pki.Explain(err), pki.ErrForeignCA) {
		t.Fatalf("client trusting another CA: %v", err)
	}

	// Through clientv3: nothing gets through.
	c := cl.ClientWith(t, cl.Verifier, forged)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, keys.Config("shop"), "{}"); err == nil {
		t.Fatal("put with a forged root certificate succeeded")
	}
	resp, err := cl.Root.Get(ctxT(t), keys.Config("shop"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the forged put changed something: %v %v", resp, err)
	}
}

// TestJoinFlow walks the join of a node on a secured etcd: an administrator
// makes a token, the coordinator (its own role) redeems it, root provisions
// the node's user, and the node's certificate then writes its own keys. A
// node cannot read the tokens; the coordinator cannot write what deisctl
// and the agents own.
func TestJoinFlow(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	names := etcdauth.NewNames(prefix)
	if err := etcdauth.EnsureUser(ctx, cl.Root, prefix, "admin", etcdauth.UserOptions{Admin: true}); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.EnsureCoordinator(ctx, cl.Root, prefix, ""); err != nil {
		t.Fatal(err)
	}
	admin := cl.Client(t, names.User("admin"))
	coord := cl.Client(t, names.Coordinator())

	tok, err := jointoken.New(admin, prefix).Create(ctx, "n1", map[string]string{"role": "runtime"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	claim, err := jointoken.New(coord, prefix).Redeem(ctx, tok.String(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, claim.Node, etcdauth.NodeOptions{}); err != nil {
		t.Fatal(err)
	}
	n1 := cl.Client(t, names.Node(claim.Node))
	allowed(t, "joined node registers", put(n1, keys.Node("n1")))
	denied(t, "a node reads the join tokens", get(n1, jointoken.New(n1, prefix).Prefix(), clientv3.WithPrefix()))
	if _, err := jointoken.New(n1, prefix).Create(ctx, "n2", nil, 0); !etcdauth.IsPermissionDenied(err) {
		t.Errorf("a node makes a join token: %v", err)
	}

	allowed(t, "coordinator writes a databag", put(coord, keys.Runtime("n1")))
	allowed(t, "coordinator writes routing", put(coord, keys.Routing("shop")))
	allowed(t, "coordinator appends a release", put(coord, keys.Release("shop", 1)))
	allowed(t, "coordinator reads a config", get(coord, keys.Config("shop")))
	allowed(t, "coordinator reads every node's status", get(coord, keys.NodeStatuses(), clientv3.WithPrefix()))
	for _, k := range []string{keys.Node("n1"), keys.Heartbeat("n1"), keys.NodeStatus("n1"), keys.User("eve"),
		keys.SSHKey("x"), keys.Drain("n1"), keys.NextUID()} {
		denied(t, "coordinator puts "+k, put(coord, k))
	}
	_, err = coord.UserAdd(ctx, "mallory", "pw")
	denied(t, "coordinator's role adds an etcd user", err)
}

// TestEnsureRoleConverges: EnsureRole grants what is missing, revokes what
// is no longer asked for, and changes nothing when run again.
func TestEnsureRoleConverges(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	perms := etcdauth.FormationPerms(keys, "shop")
	if err := etcdauth.EnsureRole(ctx, cl.Root, "r", perms); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.EnsureRole(ctx, cl.Root, "r", perms); err != nil {
		t.Fatal(err)
	}
	got, err := cl.Root.RoleGet(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Perm) != len(perms) {
		t.Fatalf("role has %d permissions, want %d", len(got.Perm), len(perms))
	}
	if err := etcdauth.EnsureRole(ctx, cl.Root, "r", perms[:2]); err != nil {
		t.Fatal(err)
	}
	got, _ = cl.Root.RoleGet(ctx, "r")
	if len(got.Perm) != 2 {
		t.Fatalf("after shrinking: %d permissions", len(got.Perm))
	}
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "Bad_Name", etcdauth.NodeOptions{}); err == nil {
		t.Fatal("invalid node name accepted")
	}
	if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, "n", etcdauth.NodeOptions{ProxyFormations: []string{"shop"}}); err == nil {
		t.Fatal("proxy formations of a node that is no proxy accepted")
	}
	if _, err := cl.Root.UserGet(ctx, etcdauth.NewNames(prefix).Node("n")); err == nil {
		t.Fatal("refused EnsureNode made a user")
	}
}

// TestTable checks the permission table itself, without etcd: node a's
// roles cover none of node b's keys and no desired state; formation roles do
// not leak into formations whose name starts the same.
func TestTable(t *testing.T) {
	w := clientv3.PermissionType(clientv3.PermWrite)
	var node []etcdauth.Perm
	node = append(node, etcdauth.NodesPerms(keys)...)
	node = append(node, etcdauth.ProxyReadPerms(keys, "shop")...)
	node = append(node, etcdauth.NodePerms(keys, "a")...)
	node = append(node, etcdauth.ProxyFormationPerms(keys, "a", "shop")...)
	for _, k := range []string{keys.Node("ab"), keys.Heartbeat("ab"), keys.NodeStatus("ab"), keys.Runtime("a"), keys.Routing("shop"),
		keys.ProxyAck("shop", "ab"), keys.Config("shop"), keys.Formation("shop")} {
		if etcdauth.Covers(node, k, w) {
			t.Errorf("node a may write %s", k)
		}
	}
	rd := clientv3.PermissionType(clientv3.PermRead)
	// Releases and their statuses (config, secrets) of no formation, not
	// even one it serves.
	for _, k := range []string{keys.Release("shop", 1), keys.Release("other", 1), keys.ReleaseStatus("shop", 1), keys.Config("shop"),
		keys.Routing("shopping"), keys.Cert("shopping", "x"), keys.ACMEChallenge("shopping", "t"), keys.Routing("other")} {
		if etcdauth.Covers(node, k, rd) {
			t.Errorf("node a, serving shop, may read %s", k)
		}
	}
	f := etcdauth.FormationPerms(keys, "shop")
	for _, k := range []string{keys.Formation("shopping"), keys.Config("shopping"), keys.Layer("shopping", "web"), keys.Release("shopping", 1)} {
		if etcdauth.Covers(f, k, w) {
			t.Errorf("shop's role may write %s", k)
		}
	}
	// A user granted shop reads the agents' reports (ps, status) but no
	// runtime databag: those hold every formation's env.
	u := append(etcdauth.UserPerms(keys, "alice"), etcdauth.FormationPerms(keys, "shop")...)
	for _, k := range []string{keys.Runtime("a"), keys.Runtimes(), keys.Config("other"), keys.Release("other", 1)} {
		if etcdauth.Covers(u, k, rd) {
			t.Errorf("alice, granted shop, may read %s", k)
		}
	}
	for _, k := range []string{keys.NodeStatus("a"), keys.Drain("a"), keys.ProxyAck("shop", "a"), keys.Routing("shop"), keys.FormationStatus("shop")} {
		if !etcdauth.Covers(u, k, rd) {
			t.Errorf("alice, granted shop, may not read %s (deisctl ps, status)", k)
		}
	}
	if n := etcdauth.NewNames("/a/b/"); n.Node("x") != "a.b:node-x" {
		t.Errorf("names under /a/b: %q", n.Node("x"))
	}
	if n := etcdauth.NewNames(""); n.User("alice") != "deis:user-alice" {
		t.Errorf("default names: %q", n.User("alice"))
	}
}

// BenchmarkRoundTrip measures one Put and one Get against three real etcds:
// plain (no TLS, no auth), with TLS and client certificates, and with TLS,
// client certificates and auth on (node a writing its own status key). Each
// iteration does the operation on the three in turn, so a busy machine
// slows them alike, and the median of each is reported (µs):
//
//	go test -run XXX -bench RoundTrip -benchtime 3000x ./pkg/etcdauth/
func BenchmarkRoundTrip(b *testing.B) {
	value := strings.Repeat("x", 512)
	key := keys.NodeStatus("a")
	_, plain := etcdtest.Start(b)
	tlsOnly := authtest.StartTLSOnly(b)
	secured := authtest.Start(b)
	if err := etcdauth.EnsureNode(ctxT(b), secured.Root, prefix, "a", etcdauth.NodeOptions{}); err != nil {
		b.Fatal(err)
	}
	node := etcdauth.NewNames(prefix).Node("a")
	clients := []struct {
		name string
		c    *clientv3.Client
	}{{"plain", plain}, {"tls", tlsOnly.Client(b, node)}, {"tls+auth", secured.Client(b, node)}}
	ops := []struct {
		name string
		do   func(c *clientv3.Client) error
	}{
		{"put", func(c *clientv3.Client) error { _, err := c.Put(context.Background(), key, value); return err }},
		{"get", func(c *clientv3.Client) error { _, err := c.Get(context.Background(), key); return err }},
	}
	for _, cl := range clients { // warm up: connections, first writes
		for _, op := range ops {
			if err := op.do(cl.c); err != nil {
				b.Fatalf("%s %s: %v", cl.name, op.name, err)
			}
		}
	}
	took := make(map[string][]time.Duration)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, op := range ops {
			for _, cl := range clients {
				t0 := time.Now()
				if err := op.do(cl.c); err != nil {
					b.Fatal(err)
				}
				took[cl.name+"-"+op.name] = append(took[cl.name+"-"+op.name], time.Since(t0))
			}
		}
	}
	b.StopTimer()
	for name, d := range took {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), name+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*9/10].Microseconds()), name+"-p90-µs")
	}
}

// TestSync: Sync makes etcd's users and roles follow the platform's records,
// in both directions, and leaves alone what is not this installation's.
func TestSync(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	names := etcdauth.NewNames(prefix)
	if err := etcdauth.EnsureCoordinator(ctx, cl.Root, prefix, ""); err != nil {
		t.Fatal(err)
	}
	// Another installation on the same etcd.
	if err := etcdauth.EnsureNode(ctx, cl.Root, "/other", "z", etcdauth.NodeOptions{}); err != nil {
		t.Fatal(err)
	}
	// The retired shared role that read every formation's routing.
	if err := etcdauth.EnsureRole(ctx, cl.Root, names.Proxies(), []etcdauth.Perm{{Key: keys.Routings(), Prefix: true, Type: clientv3.PermissionType(clientv3.PermRead)}}); err != nil {
		t.Fatal(err)
	}
	// The retired role that let every node read every formation's releases.
	if err := etcdauth.EnsureRole(ctx, cl.Root, names.LegacyNodes(), []etcdauth.Perm{{Key: keys.AllReleases(), Prefix: true, Type: clientv3.PermissionType(clientv3.PermRead)}}); err != nil {
		t.Fatal(err)
	}
	d := etcdauth.Desired{
		Nodes:      map[string]etcdauth.NodeOptions{"a": {Proxy: true, ProxyFormations: []string{"shop"}, Serves: []string{"shop"}}, "b": {}},
		Users:      map[string]etcdauth.UserGrants{"alice": {Formations: []string{"shop"}}, "bob": {Admin: true}},
		Formations: []string{"shop", "other"},
	}
	if err := etcdauth.Sync(ctx, cl.Root, prefix, d); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.Sync(ctx, cl.Root, prefix, d); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	a, b := cl.Client(t, names.Node("a")), cl.Client(t, names.Node("b"))
	alice, bob := cl.Client(t, names.User("alice")), cl.Client(t, names.User("bob"))
	allowed(t, "a acks shop", put(a, keys.ProxyAck("shop", "a")))
	allowed(t, "a reads shop's routing", get(a, keys.Routing("shop")))
	denied(t, "a reads other's routing", get(a, keys.Routing("other")))
	allowed(t, "b puts its status", put(b, keys.NodeStatus("b")))
	allowed(t, "alice sets shop's config", put(alice, keys.Config("shop")))
	allowed(t, "alice reads the agents' reports (ps, status)", get(alice, keys.NodeStatuses(), clientv3.WithPrefix()))
	denied(t, "alice reads the runtime databags (every formation's env)", get(alice, keys.Runtimes(), clientv3.WithPrefix()))
	denied(t, "alice reads a node's runtime databag", get(alice, keys.Runtime("a")))
	denied(t, "alice sets other's config", put(alice, keys.Config("other")))
	allowed(t, "bob (admin) sets other's config", put(bob, keys.Config("other")))

	// Node b removed, alice moved from shop to other, bob gone, shop destroyed.
	d = etcdauth.Desired{
		Nodes:      map[string]etcdauth.NodeOptions{"a": {}},
		Users:      map[string]etcdauth.UserGrants{"alice": {Formations: []string{"other"}}},
		Formations: []string{"other"},
	}
	if err := etcdauth.Sync(ctx, cl.Root, prefix, d); err != nil {
		t.Fatal(err)
	}
	if err := put(b, keys.NodeStatus("b")); err == nil {
		t.Error("removed node b still writes")
	}
	denied(t, "a, no longer a proxy, acks shop", put(a, keys.ProxyAck("shop", "a")))
	denied(t, "a, no longer a proxy, reads shop's routing", get(a, keys.Routing("shop")))
	allowed(t, "a puts its status", put(a, keys.NodeStatus("a")))
	denied(t, "alice sets shop's config after it was taken away", put(alice, keys.Config("shop")))
	allowed(t, "alice sets other's config once granted", put(alice, keys.Config("other")))
	if err := put(bob, keys.Config("other")); err == nil {
		t.Error("removed user bob still writes")
	}
	roles, err := cl.Root.RoleList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(roles.Roles, " ")
	for _, gone := range []string{names.Formation("shop"), names.Node("b"), names.User("bob"), names.Proxies(), names.LegacyNodes()} {
		if strings.Contains(got, gone) {
			t.Errorf("role %s left: %s", gone, got)
		}
	}
	for _, kept := range []string{names.Coordinator(), etcdauth.Root, etcdauth.NewNames("/other").Node("z")} {
		if !strings.Contains(got, kept) {
			t.Errorf("role %s removed: %s", kept, got)
		}
	}
	if _, err := cl.Root.UserGet(ctx, names.Coordinator()); err != nil {
		t.Errorf("coordinator user removed: %v", err)
	}

	// Bad input changes nothing.
	bad := etcdauth.Desired{Users: map[string]etcdauth.UserGrants{"carol": {Formations: []string{"nope"}}}, Formations: []string{"other"}}
	if err := etcdauth.Sync(ctx, cl.Root, prefix, bad); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("grant of a missing formation: %v", err)
	}
	if _, err := cl.Root.UserGet(ctx, names.User("carol")); err == nil {
		t.Error("refused Sync made a user")
	}
	allowed(t, "a still writes after a refused Sync", put(a, keys.NodeStatus("a")))
}

// A node that joins (on another coordinator) after a Sync read the desired
// nodes, but before it listed the users, keeps its user and role.
func TestSyncKeepsNodeJoinedMeanwhile(t *testing.T) {
	cl := authtest.Start(t)
	ctx := ctxT(t)
	names := etcdauth.NewNames(prefix)
	if err := etcdauth.EnsureCoordinator(ctx, cl.Root, prefix, ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"late", "gone"} {
		if err := etcdauth.EnsureNode(ctx, cl.Root, prefix, n, etcdauth.NodeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d := etcdauth.Desired{
		Nodes: map[string]etcdauth.NodeOptions{},
		NodeJoined: func(_ context.Context, node string) (bool, error) {
			return node == "late", nil
		},
	}
	if err := etcdauth.Sync(ctx, cl.Root, prefix, d); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Root.UserGet(ctx, names.Node("late")); err != nil {
		t.Errorf("node that joined meanwhile lost its user: %v", err)
	}
	if _, err := cl.Root.UserGet(ctx, names.Node("gone")); err == nil {
		t.Error("node that never joined kept its user")
	}
	allowed(t, "late puts its status", put(cl.Client(t, names.Node("late")), keys.NodeStatus("late")))
}
