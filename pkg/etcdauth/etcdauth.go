package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/state"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Auth is the part of etcd's auth API this package uses; a
// *clientv3.Client with root's credentials provides it.
type Auth interface {
	AuthEnable(ctx context.Context) (*clientv3.AuthEnableResponse, error)
	AuthStatus(ctx context.Context) (*clientv3.AuthStatusResponse, error)
	UserAddWithOptions(ctx context.Context, name, password string, opt *clientv3.UserAddOptions) (*clientv3.AuthUserAddResponse, error)
	UserChangePassword(ctx context.Context, name, password string) (*clientv3.AuthUserChangePasswordResponse, error)
	UserDelete(ctx context.Context, name string) (*clientv3.AuthUserDeleteResponse, error)
	UserGet(ctx context.Context, name string) (*clientv3.AuthUserGetResponse, error)
	UserGrantRole(ctx context.Context, user, role string) (*clientv3.AuthUserGrantRoleResponse, error)
	UserRevokeRole(ctx context.Context, name, role string) (*clientv3.AuthUserRevokeRoleResponse, error)
	RoleAdd(ctx context.Context, name string) (*clientv3.AuthRoleAddResponse, error)
	RoleGet(ctx context.Context, role string) (*clientv3.AuthRoleGetResponse, error)
	RoleGrantPermission(ctx context.Context, name, key, rangeEnd string, permType clientv3.PermissionType) (*clientv3.AuthRoleGrantPermissionResponse, error)
	RoleRevokePermission(ctx context.Context, role, key, rangeEnd string) (*clientv3.AuthRoleRevokePermissionResponse, error)
	RoleDelete(ctx context.Context, role string) (*clientv3.AuthRoleDeleteResponse, error)
	UserList(ctx context.Context) (*clientv3.AuthUserListResponse, error)
	RoleList(ctx context.Context) (*clientv3.AuthRoleListResponse, error)
}

// Root is etcd's superuser and its role.
const Root = "root"

// Names are the etcd user and role names of one installation. They carry
// the installation's prefix ("/deis" gives "deis:node-a"), so installations
// sharing an etcd cluster never share a user or a role. A client
// certificate's Common Name is its etcd user name.
type Names struct{ ns string }

// NewNames returns the names of the installation under prefix ("" means
// state.DefaultPrefix).
func NewNames(prefix string) Names {
	p := strings.Trim(state.NewKeys(prefix).Prefix, "/")
	return Names{ns: strings.ReplaceAll(p, "/", ".")}
}

func (n Names) name(s string) string { return n.ns + ":" + s }

// Coordinator is the coordinators' user and role.
func (n Names) Coordinator() string { return n.name("coordinator") }

// Admin is the administrators' role.
func (n Names) Admin() string { return n.name("admin") }

// Nodes is the role every node has. Proxies is the retired shared role
// that let every proxy read every formation's routing: EnsureNode takes it
// from a node, Sync deletes it.
func (n Names) Nodes() string   { return n.name("nodes") }
func (n Names) Proxies() string { return n.name("proxies") }

// LegacyNodes is the retired role that let every node read every
// formation's releases and release statuses (for the agent API's one-off
// run, whose spec now comes from the node's own runtime databag):
// EnsureNode takes it from a node, Sync deletes it.
func (n Names) LegacyNodes() string { return n.name("legacy-nodes") }

// Node is node's user and its own role.
func (n Names) Node(node string) string { return n.name("node-" + node) }

// User is a platform user's etcd user and own role.
func (n Names) User(user string) string { return n.name("user-" + user) }

// Formation is the role granted to the users of formation f.
func (n Names) Formation(f string) string { return n.name("formation-" + f) }

// IsPermissionDenied reports whether err is etcd refusing a request to the
// credentials used.
func IsPermissionDenied(err error) bool {
	if err == nil {
		return false
	}
	// A canceled watch reports a gRPC status, not the client's error value.
	return errors.Is(err, rpctypes.ErrPermissionDenied) || strings.Contains(err.Error(), rpctypes.ErrPermissionDenied.Error())
}

// Enable turns authentication on: it makes the root role and the root user
// (with password, or none when password is "": then only a client
// certificate with Common Name "root" authenticates as root) and enables
// auth. It is idempotent; a is typically the client that just started a
// fresh etcd.
func Enable(ctx context.Context, a Auth, password string) error {
	st, err := a.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("etcdauth: auth status: %w", err)
	}
	if st.Enabled {
		return nil
	}
	if err := ensureRoleExists(ctx, a, Root); err != nil {
		return err
	}
	if err := ensureUser(ctx, a, Root, password); err != nil {
		return err
	}
	if _, err := a.UserGrantRole(ctx, Root, Root); err != nil {
		return fmt.Errorf("etcdauth: grant root the root role: %w", err)
	}
	if _, err := a.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdauth: enable auth: %w", err)
	}
	return nil
}

// EnsureRole makes role hold exactly perms: it creates the role if needed,
// grants what is missing and revokes what is not in perms.
func EnsureRole(ctx context.Context, a Auth, role string, perms []Perm) error {
	if err := ensureRoleExists(ctx, a, role); err != nil {
		return err
	}
	got, err := a.RoleGet(ctx, role)
	if err != nil {
		return fmt.Errorf("etcdauth: get role %s: %w", role, err)
	}
	type rng struct{ key, end string }
	want := map[rng]clientv3.PermissionType{}
	for _, p := range perms {
		k := rng{p.Key, p.RangeEnd()}
		if t, ok := want[k]; ok && t != p.Type {
			want[k] = readWrite
		} else {
			want[k] = p.Type
		}
	}
	have := map[rng]clientv3.PermissionType{}
	for _, p := range got.Perm {
		have[rng{string(p.Key), string(p.RangeEnd)}] = clientv3.PermissionType(p.PermType)
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			if _, err := a.RoleRevokePermission(ctx, role, k.key, k.end); err != nil && !errors.Is(err, rpctypes.ErrPermissionNotGranted) {
				return fmt.Errorf("etcdauth: revoke %s from role %s: %w", k.key, role, err)
			}
		}
	}
	keys := make([]rng, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].key < keys[j].key || keys[i].key == keys[j].key && keys[i].end < keys[j].end
	})
	for _, k := range keys {
		if t, ok := have[k]; ok && t == want[k] {
			continue
		}
		if _, err := a.RoleGrantPermission(ctx, role, k.key, k.end, want[k]); err != nil {
			return fmt.Errorf("etcdauth: grant %s on %s to role %s: %w", typeName(want[k]), k.key, role, err)
		}
	}
	return nil
}

func typeName(t clientv3.PermissionType) string {
	switch t {
	case read:
		return "read"
	case readWrite:
		return "readwrite"
	}
	return "write"
}

func ensureRoleExists(ctx context.Context, a Auth, role string) error {
	if _, err := a.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("etcdauth: add role %s: %w", role, err)
	}
	return nil
}

// ensureUser adds user if missing: with no password (only a client
// certificate authenticates it) when password is "", else with password,
// which it sets again on an existing user.
func ensureUser(ctx context.Context, a Auth, user, password string) error {
	_, err := a.UserAddWithOptions(ctx, user, password, &clientv3.UserAddOptions{NoPassword: password == ""})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrUserAlreadyExist):
		if password != "" {
			if _, err := a.UserChangePassword(ctx, user, password); err != nil {
				return fmt.Errorf("etcdauth: set the password of %s: %w", user, err)
			}
		}
		return nil
	}
	return fmt.Errorf("etcdauth: add user %s: %w", user, err)
}

// setRoles makes user hold every role in want and none of the other roles
// that managed reports as its to manage; roles it does not manage are
// left as they are.
func setRoles(ctx context.Context, a Auth, user string, want []string, managed func(role string) bool) error {
	u, err := a.UserGet(ctx, user)
	if err != nil {
		return fmt.Errorf("etcdauth: get user %s: %w", user, err)
	}
	has := map[string]bool{}
	for _, r := range u.Roles {
		has[r] = true
	}
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[r] = true
		if !has[r] {
			if _, err := a.UserGrantRole(ctx, user, r); err != nil {
				return fmt.Errorf("etcdauth: grant role %s to %s: %w", r, user, err)
			}
		}
	}
	for r := range has {
		if !wanted[r] && managed(r) {
			if _, err := a.UserRevokeRole(ctx, user, r); err != nil && !errors.Is(err, rpctypes.ErrRoleNotGranted) {
				return fmt.Errorf("etcdauth: revoke role %s from %s: %w", r, user, err)
			}
		}
	}
	return nil
}

// EnsureCoordinator makes the coordinators' user (no password when password
// is "": client certificate only) and role (CoordinatorPerms).
func EnsureCoordinator(ctx context.Context, a Auth, prefix, password string) error {
	k, n := state.NewKeys(prefix), NewNames(prefix)
	if err := EnsureRole(ctx, a, n.Coordinator(), CoordinatorPerms(k)); err != nil {
		return err
	}
	if err := ensureUser(ctx, a, n.Coordinator(), password); err != nil {
		return err
	}
	return setRoles(ctx, a, n.Coordinator(), []string{n.Coordinator()}, func(string) bool { return false })
}

// NodeOptions are what a node's roles depend on.
type NodeOptions struct {
	// Proxy grants the writes of the node's acks and traffic reports
	// (ProxyNodePerms) and, per formation in ProxyFormations, exact ones.
	Proxy           bool
	ProxyFormations []string
	// Serves are the formations whose proxy layer selects the node: it
	// may read their routing, certificates and challenges
	// (ProxyReadPerms). Needs Proxy.
	Serves []string
	// Password for the node's etcd user; "" means client certificate only.
	Password string
}

// EnsureNode makes node's etcd user (the Common Name of its client
// certificate is Names.Node(node)) with the shared nodes role and its own
// role: NodePerms, plus when opts.Proxy ProxyNodePerms, ProxyFormationPerms
// of opts.ProxyFormations and ProxyReadPerms of opts.Serves. Run again with other options,
// it converges: roles and permissions not asked for are taken away.
func EnsureNode(ctx context.Context, a Auth, prefix, node string, opts NodeOptions) error {
	if err := state.ValidateName("node", node); err != nil {
		return err
	}
	if (len(opts.ProxyFormations) > 0 || len(opts.Serves) > 0) && !opts.Proxy {
		return fmt.Errorf("etcdauth: node %s is given proxy formations but is no proxy: set NodeOptions.Proxy too", node)
	}
	for _, f := range append(append([]string(nil), opts.ProxyFormations...), opts.Serves...) {
		if err := state.ValidateName("formation", f); err != nil {
			return err
		}
	}
	k, n := state.NewKeys(prefix), NewNames(prefix)
	if err := EnsureRole(ctx, a, n.Nodes(), NodesPerms(k)); err != nil {
		return err
	}
	roles := []string{n.Nodes(), n.Node(node)}
	own := NodePerms(k, node)
	if opts.Proxy {
		own = append(own, ProxyNodePerms(k, node)...)
		for _, f := range opts.ProxyFormations {
			own = append(own, ProxyFormationPerms(k, node, f)...)
		}
		for _, f := range opts.Serves {
			own = append(own, ProxyReadPerms(k, f)...)
		}
	}
	if err := EnsureRole(ctx, a, n.Node(node), own); err != nil {
		return err
	}
	if err := ensureUser(ctx, a, n.Node(node), opts.Password); err != nil {
		return err
	}
	managed := map[string]bool{n.Nodes(): true, n.Proxies(): true, n.LegacyNodes(): true, n.Node(node): true}
	return setRoles(ctx, a, n.Node(node), roles, func(r string) bool { return managed[r] })
}

// RemoveNode deletes node's etcd user and own role. etcd refuses the node's
// next request, on connections already open too: this, not the revoked
// certificate, is what ends a node's access to etcd. Removing a node that
// has no user is not an error.
func RemoveNode(ctx context.Context, a Auth, prefix, node string) error {
	if err := state.ValidateName("node", node); err != nil {
		return err
	}
	n := NewNames(prefix)
	if _, err := a.UserDelete(ctx, n.Node(node)); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcdauth: delete user %s: %w", n.Node(node), err)
	}
	if _, err := a.RoleDelete(ctx, n.Node(node)); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("etcdauth: delete role %s: %w", n.Node(node), err)
	}
	return nil
}

// UserOptions are what a user's roles depend on.
type UserOptions struct {
	// Admin grants the admin role (AdminPerms); otherwise the user has
	// only its own role (UserPerms) and the formations granted to it.
	Admin bool
	// Password for the user's etcd user; "" means client certificate only.
	Password string
}

// EnsureUser makes user's etcd user (Names.User(user)) with its own role and
// the admin role when opts.Admin. Formation grants are left as they are.
func EnsureUser(ctx context.Context, a Auth, prefix, user string, opts UserOptions) error {
	if err := state.ValidateName("user", user); err != nil {
		return err
	}
	k, n := state.NewKeys(prefix), NewNames(prefix)
	if err := EnsureRole(ctx, a, n.User(user), UserPerms(k, user)); err != nil {
		return err
	}
	roles := []string{n.User(user)}
	if opts.Admin {
		if err := EnsureRole(ctx, a, n.Admin(), AdminPerms(k)); err != nil {
			return err
		}
		roles = append(roles, n.Admin())
	}
	if err := ensureUser(ctx, a, n.User(user), opts.Password); err != nil {
		return err
	}
	return setRoles(ctx, a, n.User(user), roles, func(r string) bool { return r == n.Admin() || r == n.User(user) })
}

// RemoveUser deletes user's etcd user and own role; not an error when there
// is none.
func RemoveUser(ctx context.Context, a Auth, prefix, user string) error {
	if err := state.ValidateName("user", user); err != nil {
		return err
	}
	n := NewNames(prefix)
	if _, err := a.UserDelete(ctx, n.User(user)); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcdauth: delete user %s: %w", n.User(user), err)
	}
	if _, err := a.RoleDelete(ctx, n.User(user)); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("etcdauth: delete role %s: %w", n.User(user), err)
	}
	return nil
}

// GrantFormation lets user change formation f: it makes f's role
// (FormationPerms) if needed and grants it to the user, who must exist
// (EnsureUser).
func GrantFormation(ctx context.Context, a Auth, prefix, user, f string) error {
	if err := state.ValidateName("user", user); err != nil {
		return err
	}
	if err := state.ValidateName("formation", f); err != nil {
		return err
	}
	k, n := state.NewKeys(prefix), NewNames(prefix)
	if _, err := a.UserGet(ctx, n.User(user)); errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcdauth: user %s has no etcd user yet: create it first (EnsureUser, deisctl users:create %s)", user, user)
	}
	if err := EnsureRole(ctx, a, n.Formation(f), FormationPerms(k, f)); err != nil {
		return err
	}
	if _, err := a.UserGrantRole(ctx, n.User(user), n.Formation(f)); err != nil {
		return fmt.Errorf("etcdauth: grant %s to %s: %w", f, user, err)
	}
	return nil
}

// RevokeFormation takes formation f away from user; not an error when it
// was not granted or the user does not exist.
func RevokeFormation(ctx context.Context, a Auth, prefix, user, f string) error {
	if err := state.ValidateName("user", user); err != nil {
		return err
	}
	if err := state.ValidateName("formation", f); err != nil {
		return err
	}
	n := NewNames(prefix)
	_, err := a.UserRevokeRole(ctx, n.User(user), n.Formation(f))
	if err != nil && !errors.Is(err, rpctypes.ErrRoleNotGranted) && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcdauth: revoke %s from %s: %w", f, user, err)
	}
	return nil
}

// RemoveFormation deletes formation f's role (etcd takes it from every user
// holding it), for formations:destroy.
func RemoveFormation(ctx context.Context, a Auth, prefix, f string) error {
	if err := state.ValidateName("formation", f); err != nil {
		return err
	}
	n := NewNames(prefix)
	if _, err := a.RoleDelete(ctx, n.Formation(f)); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("etcdauth: delete role %s: %w", n.Formation(f), err)
	}
	return nil
}

// Covers reports whether perms allow typ on key (a test and a doc aid: etcd
// decides for real).
func Covers(perms []Perm, key string, typ clientv3.PermissionType) bool {
	for _, p := range perms {
		if p.Type != typ && p.Type != readWrite {
			continue
		}
		if p.Prefix && strings.HasPrefix(key, p.Key) || !p.Prefix && key == p.Key {
			return true
		}
	}
	return false
}

// Denied turns etcd's refusal of user's change to formation f into the one
// line deisctl prints ("alice may not change shop: ask an administrator for
// deisctl perms:grant alice -f shop"); other errors pass through.
func Denied(err error, user, f string) error {
	if !IsPermissionDenied(err) {
		return err
	}
	if f == "" {
		return fmt.Errorf("%s may not do this: ask an administrator: %w", user, err)
	}
	return fmt.Errorf("%s may not change %s: ask an administrator for deisctl perms:grant %s -f %s: %w", user, f, user, f, err)
}
