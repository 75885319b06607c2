package ctl

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/ssh"
)

// Integration tests of users, permissions and users' keys against real etcd.

// newPubKey writes a fresh ed25519 public key file and returns its path
// and fingerprint.
func newPubKey(t *testing.T, comment string) (path, fp string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "id_ed25519.pub")
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " " + comment + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ssh.FingerprintSHA256(pk)
}

// users returns deisctl users --json by name.
func (c *cluster) users() map[string]userJSON {
	c.t.Helper()
	var list []userJSON
	if err := json.Unmarshal([]byte(c.ok("users", "--json")), &list); err != nil {
		c.t.Fatal(err)
	}
	out := map[string]userJSON{}
	for _, u := range list {
		out[u.Name] = u
	}
	return out
}

func (c *cluster) isAdmin(user string) bool {
	c.t.Helper()
	ok, err := c.store.IsAdmin(c.ctx(), user)
	if err != nil {
		c.t.Fatal(err)
	}
	return ok
}

func TestUsersCreateAndList(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys

	// Before any user exists, only the bootstrap admin is listed.
	u := c.users()
	if len(u) != 1 || !u["admin"].Admin || !u["admin"].Bootstrap {
		t.Fatalf("users of a fresh platform = %+v", u)
	}
	contains(t, c.ok("users:list"), "admin", "yes (no record: bootstrap admin)", "all")

	out := c.ok("users:create", "alice")
	contains(t, out, "Creating user alice... done", "keys:add PATH.pub --user alice", "perms:grant alice -f FORMATION")
	var rec state.User
	c.get(k.User("alice"), &rec)
	if rec.Name != "alice" || rec.Admin || rec.Created.IsZero() {
		t.Fatalf("alice = %+v", rec)
	}
	out = c.ok("users:create", "--admin", "bob")
	contains(t, out, "Creating admin bob... done", "User admin still counts as an admin while it has no record")
	if !c.isAdmin("bob") || c.isAdmin("alice") || !c.isAdmin("admin") {
		t.Fatal("admin flags not as created")
	}

	c.fails("user alice already exists", "users:create", "alice", "--admin")
	for _, bad := range []string{"Alice", "a/b", "x-", strings.Repeat("a", 64), ""} {
		c.fails("invalid user name", "users:create", bad)
	}
	c.fails("usage: deisctl users:create NAME", "users:create")
	c.fails("usage: deisctl users:create NAME", "users:create", "a", "b")

	// Creating "admin" without --admin would leave bob the only admin: fine.
	// Its record is authoritative from then on.
	out = c.ok("users:create", "admin")
	contains(t, out, "The record of admin is now authoritative", "admin may now push only to the formations granted")
	if c.isAdmin("admin") {
		t.Fatal("admin is still an admin after users:create admin without --admin")
	}
	u = c.users()
	if len(u) != 3 || u["admin"].Admin || u["admin"].Bootstrap || !u["bob"].Admin || u["alice"].Admin {
		t.Fatalf("users = %+v", u)
	}
	out = c.ok("users")
	contains(t, out, "NAME", "ADMIN", "KEYS", "FORMATIONS", "alice", "bob")
	if strings.Contains(out, "bootstrap") {
		t.Fatalf("lists a bootstrap admin although admin has a record:\n%s", out)
	}
}

func TestUsersCreateAdminRecordNeedsAnotherAdmin(t *testing.T) {
	c := newCluster(t)
	// The bootstrap admin is the only admin: a non-admin record for it
	// would leave none.
	c.fails("would leave no admin", "users:create", "admin")
	contains(t, c.ok("users:create", "admin", "--admin"), "Creating admin admin... done", "now authoritative", "(it does)")
	if !c.isAdmin("admin") {
		t.Fatal("admin is no admin")
	}
}

func TestUsersDestroy(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.ok("formations:create", "hello")
	c.ok("formations:create", "other")
	c.ok("users:create", "alice")
	c.ok("users:create", "al") // a name alice's keys start with: untouched
	aliceKey, aliceFP := newPubKey(t, "alice@laptop")
	alKey, alFP := newPubKey(t, "al@laptop")
	c.ok("keys:add", aliceKey, "--user", "alice")
	c.ok("keys:add", alKey, "--user", "al")
	c.ok("perms:grant", "alice", "-f", "hello")
	c.ok("perms:grant", "alice", "-f", "other")
	c.ok("perms:grant", "al", "-f", "hello")

	c.fails("--confirm alice", "users:destroy", "alice")
	c.fails("--confirm alice", "users:destroy", "alice", "--confirm", "alic")
	c.fails("user nope does not exist", "users:destroy", "nope", "--confirm", "nope")
	c.fails("invalid user name", "users:destroy", "No!", "--confirm", "No!")
	c.fails("it is the bootstrap admin", "users:destroy", "admin", "--confirm", "admin")

	contains(t, c.ok("users:destroy", "alice", "--confirm", "alice"), "Destroying user alice (with 1 SSH keys and 2 permissions)... done")
	for _, key := range []string{k.User("alice"), k.SSHKey(state.SSHKeyID(aliceFP)), k.Perm("hello", "alice"), k.Perm("other", "alice")} {
		if c.exists(key) {
			t.Errorf("%s survived users:destroy", key)
		}
	}
	for _, key := range []string{k.User("al"), k.SSHKey(state.SSHKeyID(alFP)), k.Perm("hello", "al")} {
		if !c.exists(key) {
			t.Errorf("%s of another user went with users:destroy alice", key)
		}
	}
}

func TestUsersDestroyLastAdmin(t *testing.T) {
	c := newCluster(t)
	c.ok("users:create", "carol", "--admin")
	c.ok("users:create", "dave", "--admin")
	// With a non-admin record for admin, carol and dave are the admins.
	c.ok("users:create", "admin")
	contains(t, c.ok("users:destroy", "dave", "--confirm", "dave"), "done")
	c.fails("user carol is the last admin", "users:destroy", "carol", "--confirm", "carol")

	// A non-admin may always go, even while carol is the last admin.
	c.ok("users:create", "erin")
	c.ok("users:destroy", "erin", "--confirm", "erin")

	// Destroying admin's record makes admin the bootstrap admin again, so
	// carol is no longer the last one.
	out := c.ok("users:destroy", "admin", "--confirm", "admin")
	contains(t, out, "counts as an admin again")
	if !c.isAdmin("admin") {
		t.Fatal("admin without a record is no admin")
	}
	c.ok("users:destroy", "carol", "--confirm", "carol")
	if u := c.users(); len(u) != 1 || !u["admin"].Bootstrap {
		t.Fatalf("users = %+v", u)
	}
}

// Two admins destroyed at once while the record of "admin" is no admin's:
// the guards let exactly one go, every round.
func TestUsersDestroyConcurrentAdmins(t *testing.T) {
	c := newCluster(t)
	c.ok("users:create", "keeper", "--admin")
	c.ok("users:create", "admin")
	survivor := "keeper"
	for i := 0; i < 5; i++ {
		pair := []string{fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)}
		for _, name := range pair {
			c.ok("users:create", name, "--admin")
		}
		c.ok("users:destroy", survivor, "--confirm", survivor)
		var wg sync.WaitGroup
		errs := make([]error, len(pair))
		for j, name := range pair {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, errs[j] = c.run("users:destroy", name, "--confirm", name)
			}()
		}
		wg.Wait()
		failed := 0
		for _, err := range errs {
			if err != nil {
				if !strings.Contains(err.Error(), "is the last admin") {
					t.Fatalf("round %d: unexpected error %v", i, err)
				}
				failed++
			}
		}
		admins := c.admins(c.users())
		if failed != 1 || len(admins) != 1 {
			t.Fatalf("round %d: %d failed, admins %v: want exactly one destroyed", i, failed, admins)
		}
		survivor = admins[0]
	}
}

func (c *cluster) admins(u map[string]userJSON) []string {
	var out []string
	for _, name := range sortedKeys(u) {
		if u[name].Admin {
			out = append(out, name)
		}
	}
	return out
}

// A user with more keys and permissions than one etcd transaction may hold
// is destroyed in chunks, the record last.
func TestUsersDestroyManyPerms(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.ok("users:create", "alice")
	c.ok("users:create", "bob")
	const n = 2*maxTxnOps + 10
	var ops []clientv3.Op
	for i := 0; i < n; i++ {
		f := fmt.Sprintf("f%03d", i)
		ops = append(ops, clientv3.OpPut(k.Perm(f, "alice"), state.Marshal(state.Perm{Formation: f, User: "alice", Created: time.Now()})))
		if len(ops) == 100 {
			if _, err := c.cli.Txn(c.ctx()).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = nil
		}
	}
	ops = append(ops, clientv3.OpPut(k.Perm("f000", "bob"), state.Marshal(state.Perm{Formation: "f000", User: "bob"})))
	if _, err := c.cli.Txn(c.ctx()).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	contains(t, c.ok("users:destroy", "alice", "--confirm", "alice"), "Destroying user alice", "done")
	resp, err := c.cli.Get(c.ctx(), k.AllPerms(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != k.Perm("f000", "bob") || c.exists(k.User("alice")) {
		t.Fatalf("after users:destroy alice: %d perms left, record left %v", len(resp.Kvs), c.exists(k.User("alice")))
	}
}

func TestPerms(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.ok("formations:create", "hello")
	c.ok("formations:create", "hello2")
	c.ok("users:create", "alice")
	c.ok("users:create", "root", "--admin")

	contains(t, c.ok("perms:grant", "alice", "-f", "hello"), "Granting alice access to hello... done")
	var p state.Perm
	c.get(k.Perm("hello", "alice"), &p)
	if p.User != "alice" || p.Formation != "hello" || p.Created.IsZero() {
		t.Fatalf("perm = %+v", p)
	}
	if ok, err := c.store.MayAccess(c.ctx(), "hello", "alice"); err != nil || !ok {
		t.Fatalf("MayAccess(hello, alice) = %v, %v", ok, err)
	}
	if ok, _ := c.store.MayAccess(c.ctx(), "hello2", "alice"); ok {
		t.Fatal("alice may access hello2 without a permission")
	}
	c.unchanged("User alice may already push to hello: nothing to do", "perms:grant", "alice", "-f", "hello")
	contains(t, c.ok("perms:grant", "root", "-f", "hello"), "root is an admin and may push to every formation anyway")

	c.fails("user nope does not exist: create it with deisctl users:create nope", "perms:grant", "nope", "-f", "hello")
	c.fails(`formation "nope" not found`, "perms:grant", "alice", "-f", "nope")
	c.fails("invalid user name", "perms:grant", "Alice", "-f", "hello")
	c.fails("invalid formation name", "perms:grant", "alice", "-f", "Hello")
	c.fails("usage: deisctl perms:grant USER -f FORMATION", "perms:grant", "-f", "hello")
	c.fails("usage: deisctl perms:grant USER -f FORMATION", "perms:grant", "alice", "root", "-f", "hello")

	// perms lists the grants and every admin, the bootstrap one included.
	out := c.ok("perms", "-f", "hello")
	contains(t, out, "=== hello", "USER", "ACCESS", "alice", "granted", "root", "admin (all formations)")
	if !strings.Contains(out, "admin  ") {
		t.Fatalf("perms lacks the bootstrap admin:\n%s", out)
	}
	var list []permJSON
	if err := json.Unmarshal([]byte(c.ok("perms:list", "-f", "hello", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	want := []permJSON{{User: "admin", Admin: true}, {User: "alice", Granted: true}, {User: "root", Admin: true, Granted: true}}
	if len(list) != len(want) {
		t.Fatalf("perms --json = %+v", list)
	}
	for i := range want {
		if list[i].User != want[i].User || list[i].Admin != want[i].Admin || list[i].Granted != want[i].Granted {
			t.Fatalf("perms --json = %+v, want %+v", list, want)
		}
	}
	out = c.ok("perms", "-f", "hello2")
	if strings.Contains(out, "alice") {
		t.Fatalf("hello2 lists alice:\n%s", out)
	}
	c.fails(`formation "nope" not found`, "perms", "-f", "nope")

	contains(t, c.ok("perms:revoke", "alice", "-f", "hello"), "Revoking alice's access to hello... done")
	if c.exists(k.Perm("hello", "alice")) {
		t.Fatal("perm survived perms:revoke")
	}
	c.fails("user alice holds no permission on hello", "perms:revoke", "alice", "-f", "hello")
	c.fails("user nope does not exist", "perms:revoke", "nope", "-f", "hello")
	c.fails(`formation "nope" not found`, "perms:revoke", "alice", "-f", "nope")
	contains(t, c.ok("perms:revoke", "root", "-f", "hello"), "root is an admin, so it may still push to hello")

	// users shows the formations a user was granted.
	c.ok("perms:grant", "alice", "-f", "hello2")
	if u := c.users(); len(u["alice"].Formations) != 1 || u["alice"].Formations[0] != "hello2" {
		t.Fatalf("alice's formations = %v", u["alice"].Formations)
	}
	contains(t, c.ok("users"), "hello2")
}

func TestFormationsDestroyRemovesPermsAndBuilds(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.seedRelease("hello", nil)
	c.seedRelease("hello2", nil)
	c.ok("users:create", "alice")
	c.ok("perms:grant", "alice", "-f", "hello")
	c.ok("perms:grant", "alice", "-f", "hello2")

	contains(t, c.ok("formations:destroy", "hello", "--confirm", "hello"), "builds and permissions")
	if c.exists(k.Perm("hello", "alice")) || c.exists(k.Build("hello", "b1")) {
		t.Fatal("perms or builds of hello survived formations:destroy")
	}
	if !c.exists(k.Perm("hello2", "alice")) || !c.exists(k.Build("hello2", "b1")) {
		t.Fatal("destroying hello removed hello2's perms or builds")
	}
	// A formation created again under the name starts with no grants.
	c.ok("formations:create", "hello")
	if ok, _ := c.store.MayAccess(c.ctx(), "hello", "alice"); ok {
		t.Fatal("alice may access the new hello through the old formation's grant")
	}
}

func TestKeysOfUsers(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	path, fp := newPubKey(t, "alice@laptop")
	c.fails("user alice does not exist: create it with deisctl users:create alice", "keys:add", path, "--user", "alice")
	c.ok("users:create", "alice")
	contains(t, c.ok("keys:add", path, "--user", "alice"), "for user alice... done", fp)
	var key state.SSHKey
	c.get(k.SSHKey(state.SSHKeyID(fp)), &key)
	if key.User != "alice" {
		t.Fatalf("key = %+v", key)
	}
	c.fails("already registered (to user alice)", "keys:add", path, "--user", "admin")

	// The bootstrap admin needs no record, and is keys:add's default.
	adminPath, adminFP := newPubKey(t, "ops@host")
	contains(t, c.ok("keys:add", adminPath), "for user admin... done")

	out := c.ok("keys")
	contains(t, out, "USER", fp, "alice", adminFP, "admin")
	out = c.ok("keys:list", "--user", "alice")
	contains(t, out, fp)
	if strings.Contains(out, adminFP) {
		t.Fatalf("keys --user alice lists admin's key:\n%s", out)
	}
	var keys []state.SSHKey
	if err := json.Unmarshal([]byte(c.ok("keys", "--json", "--user", "admin")), &keys); err != nil || len(keys) != 1 || keys[0].Fingerprint != adminFP {
		t.Fatalf("keys --json --user admin = %+v, %v", keys, err)
	}
	contains(t, c.ok("keys", "--user", "bob"), "User bob has no SSH keys")
	c.fails("invalid user name", "keys", "--user", "Bob")

	// keys:remove is unchanged; a user with no record other than admin
	// gets no key.
	c.ok("keys:remove", fp)
	c.ok("users:destroy", "alice", "--confirm", "alice")
	c.fails("user alice does not exist", "keys:add", path, "--user", "alice")
}

func TestNodesInfoAPIURL(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.put(k.Node("n1"), state.Node{Name: "n1", Addr: "10.0.0.1", APIURL: "http://10.0.0.1:7070"})
	c.put(k.Node("n2"), state.Node{Name: "n2", Addr: "10.0.0.2"})
	contains(t, c.ok("nodes:info", "n1"), "Agent API:", "http://10.0.0.1:7070")
	var info nodeInfoJSON
	if err := json.Unmarshal([]byte(c.ok("nodes:info", "n1", "--json")), &info); err != nil || info.Node.APIURL != "http://10.0.0.1:7070" {
		t.Fatalf("nodes:info --json = %+v, %v", info, err)
	}
	out := c.ok("nodes:info", "n2")
	if !strings.Contains(out, "Agent API:") || strings.Contains(out, "http://") {
		t.Fatalf("nodes:info of a node without an API:\n%s", out)
	}
}
