package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/state"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Desired is every identity of one installation and what it may do, as the
// platform's own records say (registered or joining nodes, /deis/users/,
// /deis/perms/, /deis/formations/).
type Desired struct {
	// Nodes by name; a NodeOptions.Password is ignored (Sync keeps
	// certificate-only users; set a password once with EnsureNode).
	Nodes map[string]NodeOptions
	// Users by name.
	Users map[string]UserGrants
	// Formations that exist: their roles are kept, those of others deleted.
	Formations []string
	// NodeJoined, when set, is asked again, just before a node's user or
	// role is deleted for not being in Nodes, whether the node has joined
	// since Nodes was read (its record is written before its user is
	// made, perhaps by another coordinator): a node it says yes to is kept.
	NodeJoined func(ctx context.Context, node string) (bool, error)
}

// UserGrants is one user's admin flag and the formations granted to it.
type UserGrants struct {
	Admin      bool
	Formations []string
}

// Sync makes etcd's users and roles of the installation under prefix match
// d: it ensures every node, user and formation role, grants each user
// exactly its formations, and deletes the node, user and formation users and
// roles of this installation that d does not name. The coordinator's user,
// the shared roles, root and other installations' users are left alone. It
// is level-triggered: run it after every change and now and then.
func Sync(ctx context.Context, a Auth, prefix string, d Desired) error {
	k, n := state.NewKeys(prefix), NewNames(prefix)
	formations := map[string]bool{}
	for _, f := range d.Formations {
		if err := state.ValidateName("formation", f); err != nil {
			return err
		}
		formations[f] = true
	}
	for node, opts := range d.Nodes {
		if err := state.ValidateName("node", node); err != nil {
			return err
		}
		if (len(opts.ProxyFormations) > 0 || len(opts.Serves) > 0) && !opts.Proxy {
			return fmt.Errorf("etcdauth: node %s is given proxy formations but is no proxy: set NodeOptions.Proxy too", node)
		}
		for _, f := range append(append([]string(nil), opts.ProxyFormations...), opts.Serves...) {
			if !formations[f] {
				return fmt.Errorf("etcdauth: node %s proxies formation %s, which is not among the formations that exist", node, f)
			}
		}
	}
	for u, g := range d.Users {
		if err := state.ValidateName("user", u); err != nil {
			return err
		}
		for _, f := range g.Formations {
			if !formations[f] {
				return fmt.Errorf("etcdauth: user %s is granted formation %s, which is not among the formations that exist", u, f)
			}
		}
	}
	for _, f := range sortedKeys(formations) {
		if err := EnsureRole(ctx, a, n.Formation(f), FormationPerms(k, f)); err != nil {
			return err
		}
	}
	for _, node := range sortedKeys(d.Nodes) {
		opts := d.Nodes[node]
		opts.Password = ""
		if err := EnsureNode(ctx, a, prefix, node, opts); err != nil {
			return err
		}
	}
	for _, u := range sortedKeys(d.Users) {
		g := d.Users[u]
		if err := EnsureUser(ctx, a, prefix, u, UserOptions{Admin: g.Admin}); err != nil {
			return err
		}
		want := []string{n.User(u)}
		if g.Admin {
			want = append(want, n.Admin())
		}
		for _, f := range g.Formations {
			want = append(want, n.Formation(f))
		}
		fp := n.name("formation-")
		if err := setRoles(ctx, a, n.User(u), want, func(r string) bool { return strings.HasPrefix(r, fp) }); err != nil {
			return err
		}
	}

	// Delete what d does not name (names that are not valid node or user
	// names were not made by this package: left alone).
	users, err := a.UserList(ctx)
	if err != nil {
		return fmt.Errorf("etcdauth: list users: %w", err)
	}
	for _, name := range users.Users {
		if node, ok := strings.CutPrefix(name, n.name("node-")); ok && !has(d.Nodes, node) && valid(node) {
			if joined, err := d.joinedSince(ctx, node); err != nil || joined {
				if err != nil {
					return err
				}
				continue
			}
			if err := RemoveNode(ctx, a, prefix, node); err != nil {
				return err
			}
		}
		if u, ok := strings.CutPrefix(name, n.name("user-")); ok && !has(d.Users, u) && valid(u) {
			if err := RemoveUser(ctx, a, prefix, u); err != nil {
				return err
			}
		}
	}
	roles, err := a.RoleList(ctx)
	if err != nil {
		return fmt.Errorf("etcdauth: list roles: %w", err)
	}
	for _, name := range roles.Roles {
		var err error
		if name == n.Proxies() || name == n.LegacyNodes() {
			// The retired shared roles: every formation's routing (proxies),
			// every formation's releases (nodes, for one-off runs).
			if _, err := a.RoleDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
				return fmt.Errorf("etcdauth: delete role %s: %w", name, err)
			}
		}
		if f, ok := strings.CutPrefix(name, n.name("formation-")); ok && !formations[f] && valid(f) {
			err = RemoveFormation(ctx, a, prefix, f)
		}
		// Roles left by a user or node removed half-way.
		if node, ok := strings.CutPrefix(name, n.name("node-")); ok && !has(d.Nodes, node) && valid(node) {
			var joined bool
			if joined, err = d.joinedSince(ctx, node); err == nil && !joined {
				err = RemoveNode(ctx, a, prefix, node)
			}
		}
		if u, ok := strings.CutPrefix(name, n.name("user-")); ok && !has(d.Users, u) && valid(u) {
			err = RemoveUser(ctx, a, prefix, u)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d Desired) joinedSince(ctx context.Context, node string) (bool, error) {
	if d.NodeJoined == nil {
		return false, nil
	}
	ok, err := d.NodeJoined(ctx, node)
	if err != nil {
		return false, fmt.Errorf("etcdauth: has node %s joined: %w", node, err)
	}
	return ok, nil
}

func valid(name string) bool { return state.ValidateName("", name) == nil }

func has[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
