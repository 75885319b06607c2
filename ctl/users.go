package ctl

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxTxnOps is etcd's default limit on the operations of one transaction
// (--max-txn-ops). users:destroy deletes a user's keys and permissions in
// one transaction with its record when they fit, in chunks before it when
// they do not.
const maxTxnOps = 128

// txnRetries bounds the retries of a guarded write that keeps losing races.
const txnRetries = 20

func (b *builder) userCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "users:create",
			Category:  "users",
			Usage:     "create a user, who owns SSH keys and may push to and change the formations it is granted (every one with --admin), and write its credentials",
			ArgsUsage: "NAME [--admin] [--ca DIR] [--out DIR]",
			Description: "With --ca (the platform CA's directory, DATA_DIR/pki of the first coordinator), the user gets credentials:\n" +
				"a client certificate of the CA whose name is its etcd user, written with the CA and etcd's endpoints to\n" +
				"a new directory it copies to ~/.config/deis. deisctl run with them may change only the formations granted\n" +
				"to the user (perms:grant), or every one for an admin: etcd itself enforces it.\n" +
				"Until a user record named \"admin\" exists, user admin (the owner of keys added without --user)\n" +
				"counts as an admin. Creating that record makes it authoritative: admin is then an admin only with --admin.",
			Flags: append([]cli.Flag{&cli.BoolFlag{Name: "admin", DisableDefaultText: true,
				Usage: "make the user an admin: it may push to and change every formation"}}, credentialFlags()...),
		}, usersCreate),
		b.cmd(&cli.Command{
			Name:      "users:credentials",
			Category:  "users",
			Usage:     "write new credentials (a client certificate) for an existing user, to rotate or replace them",
			ArgsUsage: "NAME --ca DIR [--out DIR]",
			Flags:     credentialFlags(),
		}, usersCredentials),
		b.cmd(&cli.Command{
			Name:     "users",
			Aliases:  []string{"users:list"},
			Category: "users",
			Usage:    "list users with their keys and the formations they may push to",
			Flags:    []cli.Flag{jsonFlag()},
		}, usersList),
		b.cmd(&cli.Command{
			Name:      "users:destroy",
			Aliases:   []string{"users:remove"},
			Category:  "users",
			Usage:     "destroy a user with its SSH keys and permissions (never the last admin)",
			ArgsUsage: "NAME --confirm NAME",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "confirm", Usage: "the user's name again, to confirm"}},
		}, usersDestroy),
	}
}

func (b *builder) permCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "perms:grant",
			Category:  "perms",
			Usage:     "let a user push to and fetch from a formation's git repository, change its config, scale, domains, limits and releases, and read its logs and run in it",
			ArgsUsage: "USER",
			Flags:     []cli.Flag{formationFlag()},
		}, permsGrant),
		b.cmd(&cli.Command{
			Name:      "perms:revoke",
			Category:  "perms",
			Usage:     "take back a user's permission on a formation",
			ArgsUsage: "USER",
			Flags:     []cli.Flag{formationFlag()},
		}, permsRevoke),
		b.cmd(&cli.Command{
			Name:     "perms",
			Aliases:  []string{"perms:list"},
			Category: "perms",
			Usage:    "list who may push to a formation: the users granted it and the admins",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, permsList),
	}
}

// userArg validates the USER (or NAME) argument.
func userArg(c *cli.Context, args []string, usage string) (string, error) {
	if len(args) != 1 {
		return "", usageError(c, usage)
	}
	if err := state.ValidateName("user", args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

// errUnknownUser says how to create a user.
func errUnknownUser(name string) error {
	return fmt.Errorf("user %s does not exist: create it with deisctl users:create %s: %w", name, name, state.ErrNotFound)
}

// accounts is every user, permission and key, each listing with the
// revision it was read at.
type accounts struct {
	users             []state.Entry[state.User]
	perms             []state.Entry[state.Perm]
	keys              []state.Entry[state.SSHKey]
	permsRev, keysRev int64
}

func readAccounts(ctx context.Context, s *state.Store) (*accounts, error) {
	var a accounts
	var err error
	if a.users, _, err = state.List[state.User](ctx, s.KV, s.Keys.Users()); err != nil {
		return nil, err
	}
	if a.perms, a.permsRev, err = state.List[state.Perm](ctx, s.KV, s.Keys.AllPerms()); err != nil {
		return nil, err
	}
	if a.keys, a.keysRev, err = state.List[state.SSHKey](ctx, s.KV, s.Keys.SSHKeys()); err != nil {
		return nil, err
	}
	return &a, nil
}

// user returns the record of name, or nil.
func (a *accounts) user(name string) *state.Entry[state.User] {
	for i := range a.users {
		if state.Base(a.users[i].Key) == name {
			return &a.users[i]
		}
	}
	return nil
}

// bootstrap reports whether BootstrapAdmin counts as an admin: it has no record.
func (a *accounts) bootstrap() bool { return a.user(state.BootstrapAdmin) == nil }

// admins are the names of the admins, sorted: the records that say so,
// and BootstrapAdmin while it has no record.
func (a *accounts) admins() []string {
	var out []string
	for _, u := range a.users {
		if u.Value.Admin {
			out = append(out, state.Base(u.Key))
		}
	}
	if a.bootstrap() {
		out = append(out, state.BootstrapAdmin)
	}
	sort.Strings(out)
	return out
}

// permsOf returns the permission keys of user: perms/FORMATION/USER.
func (a *accounts) permsOf(user string) []state.Entry[state.Perm] {
	var out []state.Entry[state.Perm]
	for _, p := range a.perms {
		if state.Base(p.Key) == user {
			out = append(out, p)
		}
	}
	return out
}

// keysOf returns the SSH keys of user.
func (a *accounts) keysOf(user string) []state.Entry[state.SSHKey] {
	var out []state.Entry[state.SSHKey]
	for _, k := range a.keys {
		if k.Value.User == user {
			out = append(out, k)
		}
	}
	return out
}

// otherAdminGuard is a guard that holds while an admin other than name
// remains one, and that admin's name; ok is false when there is none.
func (a *accounts) otherAdminGuard(k state.Keys, name string) (guard clientv3.Cmp, other string, ok bool) {
	for _, u := range a.users {
		if n := state.Base(u.Key); n != name && u.Value.Admin {
			return clientv3.Compare(clientv3.ModRevision(u.Key), "=", u.ModRevision), n, true
		}
	}
	if name != state.BootstrapAdmin && a.bootstrap() {
		return clientv3.Compare(clientv3.CreateRevision(k.User(state.BootstrapAdmin)), "=", 0), state.BootstrapAdmin, true
	}
	return clientv3.Cmp{}, "", false
}

// userGuard holds while user may own keys and permissions: its record
// still exists, or, for BootstrapAdmin without a record, always.
func userGuard(ctx context.Context, s *state.Store, name string) ([]clientv3.Cmp, error) {
	var u state.User
	found, err := getOptional(ctx, s, s.Keys.User(name), &u)
	if err != nil {
		return nil, err
	}
	switch {
	case found:
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Keys.User(name)), ">", 0)}, nil
	case name == state.BootstrapAdmin:
		return nil, nil
	}
	return nil, errUnknownUser(name)
}

func usersCreate(c *cli.Context, e *env, args []string) error {
	name, err := userArg(c, args, "NAME [--admin]")
	if err != nil {
		return err
	}
	admin := c.Bool("admin")
	ctx, k := c.Context, e.keys()
	// Check the CA and the output directory before anything is written.
	var ca *pki.CA
	var credsDir string
	if c.String("ca") != "" || c.String("out") != "" {
		if ca, err = loadCA(c); err != nil {
			return err
		}
		if credsDir, err = credentialsDir(c, name); err != nil {
			return err
		}
	}
	u := state.User{Name: name, Admin: admin, Created: time.Now().UTC()}
	var stillBootstrap bool
	for attempt := 0; ; attempt++ {
		if attempt == txnRetries {
			return state.ErrConflict
		}
		a, err := readAccounts(ctx, e.store)
		if err != nil {
			return err
		}
		if a.user(name) != nil {
			return fmt.Errorf("user %s already exists: see deisctl users, or pick another name", name)
		}
		guards := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k.User(name)), "=", 0)}
		if name == state.BootstrapAdmin && !admin {
			// The record ends the bootstrap admin: someone else must be one.
			g, _, ok := a.otherAdminGuard(k, name)
			if !ok {
				return fmt.Errorf("creating user %s without --admin would leave no admin (%s counts as one only while it has no record): pass --admin, or first create another admin with deisctl users:create NAME --admin", name, name)
			}
			guards = append(guards, g)
		}
		ok, err := e.store.Commit(ctx, guards, clientv3.OpPut(k.User(name), state.Marshal(u)))
		if err != nil {
			return err
		}
		if ok {
			stillBootstrap = admin && name != state.BootstrapAdmin && a.bootstrap()
			break
		}
	}
	w := c.App.Writer
	role := "user"
	if admin {
		role = "admin"
	}
	fmt.Fprintf(w, "Creating %s %s... done\n", role, name)
	if name == state.BootstrapAdmin {
		fmt.Fprintf(w, "The record of %s is now authoritative: %s is an admin only while its record says so", name, name)
		if admin {
			fmt.Fprintln(w, " (it does).")
		} else {
			fmt.Fprintf(w, ", and it does not: %s may now push only to the formations granted with deisctl perms:grant %s -f FORMATION.\n", name, name)
		}
	}
	if stillBootstrap {
		fmt.Fprintf(w, "User %s still counts as an admin while it has no record: end that with deisctl users:create %s (add --admin to keep it one).\n",
			state.BootstrapAdmin, state.BootstrapAdmin)
	}
	fmt.Fprintf(w, "Add its SSH key with deisctl keys:add PATH.pub --user %s", name)
	if !admin {
		fmt.Fprintf(w, ", and let it push to and change a formation with deisctl perms:grant %s -f FORMATION", name)
	}
	fmt.Fprintln(w, ".")
	if ca == nil {
		fmt.Fprintf(w, "No credentials were written (no --ca): deisctl users:credentials %s --ca DATA_DIR/pki writes them.\n", name)
		return nil
	}
	leaf, err := writeCredentials(ca, e.cfg, name, credsDir)
	if err != nil {
		return fmt.Errorf("user %s was created, but %w: run deisctl users:credentials %s --ca DIR", name, err, name)
	}
	printCredentials(c, name, credsDir, leaf)
	return nil
}

// userJSON is one row of deisctl users.
type userJSON struct {
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
	// Bootstrap is set for BootstrapAdmin while it has no record.
	Bootstrap bool      `json:"bootstrap,omitempty"`
	Created   time.Time `json:"created"`
	Keys      int       `json:"keys"`
	// Formations are those the user holds a permission on (an admin may
	// push to every formation anyway).
	Formations []string `json:"formations"`
}

func usersList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[--json]")
	}
	a, err := readAccounts(c.Context, e.store)
	if err != nil {
		return err
	}
	row := func(name string) userJSON {
		u := userJSON{Name: name, Keys: len(a.keysOf(name)), Formations: []string{}}
		for _, p := range a.permsOf(name) {
			u.Formations = append(u.Formations, p.Value.Formation)
		}
		return u
	}
	out := []userJSON{}
	for _, r := range a.users {
		u := row(state.Base(r.Key))
		u.Admin, u.Created = r.Value.Admin, r.Value.Created
		out = append(out, u)
	}
	if a.bootstrap() {
		u := row(state.BootstrapAdmin)
		u.Admin, u.Bootstrap = true, true
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	rows := make([][]string, 0, len(out))
	for _, u := range out {
		admin, formations := "no", orDash(strings.Join(u.Formations, ","))
		if u.Admin {
			admin, formations = "yes", "all"
		}
		if u.Bootstrap {
			admin = "yes (no record: bootstrap admin)"
		}
		rows = append(rows, []string{u.Name, admin, strconv.Itoa(u.Keys), formations, fmtTime(u.Created)})
	}
	return printTable(c.App.Writer, []string{"NAME", "ADMIN", "KEYS", "FORMATIONS", "CREATED"}, rows)
}

func usersDestroy(c *cli.Context, e *env, args []string) error {
	name, err := userArg(c, args, "NAME --confirm NAME")
	if err != nil {
		return err
	}
	if c.String("confirm") != name {
		return fmt.Errorf("destroying user %s removes its SSH keys and permissions: to go ahead run deisctl users:destroy %s --confirm %s", name, name, name)
	}
	ctx, k := c.Context, e.keys()
	for attempt := 0; attempt < txnRetries; attempt++ {
		a, err := readAccounts(ctx, e.store)
		if err != nil {
			return err
		}
		rec := a.user(name)
		if rec == nil {
			if name == state.BootstrapAdmin {
				return fmt.Errorf("user %s has no record: it is the bootstrap admin, an admin while it has none; to end that, create another admin, then run deisctl users:create %s (without --admin)", name, name)
			}
			return fmt.Errorf("user %s does not exist: list users with deisctl users: %w", name, state.ErrNotFound)
		}
		userRev := clientv3.Compare(clientv3.ModRevision(rec.Key), "=", rec.ModRevision)
		guards := []clientv3.Cmp{userRev,
			// No key or permission was added since they were read.
			clientv3.Compare(clientv3.ModRevision(k.AllPerms()), "<", a.permsRev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(k.SSHKeys()), "<", a.keysRev+1).WithPrefix(),
		}
		// Without its record, BootstrapAdmin counts as an admin again, so
		// destroying it never leaves no admin.
		if rec.Value.Admin && name != state.BootstrapAdmin {
			g, _, ok := a.otherAdminGuard(k, name)
			if !ok {
				return fmt.Errorf("user %s is the last admin: create another admin first with deisctl users:create NAME --admin", name)
			}
			guards = append(guards, g)
		}
		// Keys first: they are what lets someone in.
		var dels []clientv3.Op
		keys, perms := a.keysOf(name), a.permsOf(name)
		for _, kk := range keys {
			dels = append(dels, clientv3.OpDelete(kk.Key))
		}
		for _, p := range perms {
			dels = append(dels, clientv3.OpDelete(p.Key))
		}
		if len(dels)+1 > maxTxnOps {
			// Too many for one transaction: delete a chunk while the
			// record stands, then read again.
			ok, err := e.store.Commit(ctx, []clientv3.Cmp{userRev}, dels[:maxTxnOps]...)
			if err != nil {
				return err
			}
			if ok {
				attempt = -1 // progress, not a lost race
			}
			continue
		}
		ok, err := e.store.Commit(ctx, guards, append(dels, clientv3.OpDelete(rec.Key))...)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		fmt.Fprintf(c.App.Writer, "Destroying user %s (with %d SSH keys and %d permissions)... done\n", name, len(keys), len(perms))
		if name == state.BootstrapAdmin {
			fmt.Fprintf(c.App.Writer, "Warning: without a record, %s counts as an admin again (the bootstrap admin); it has no SSH keys now. Create a record with deisctl users:create %s to end that.\n", name, name)
		}
		return nil
	}
	return state.ErrConflict
}

// formationAndUser reads the -f formation and the USER argument of a perms
// command and checks the formation exists.
func formationAndUser(c *cli.Context, e *env, args []string) (f, user string, err error) {
	if user, err = userArg(c, args, "USER -f FORMATION"); err != nil {
		return "", "", err
	}
	if f, err = existingFormation(c, e); err != nil {
		return "", "", err
	}
	return f, user, nil
}

func permsGrant(c *cli.Context, e *env, args []string) error {
	f, user, err := formationAndUser(c, e, args)
	if err != nil {
		return err
	}
	ctx, k := c.Context, e.keys()
	guards, err := userGuard(ctx, e.store, user)
	if err != nil {
		return err
	}
	key := k.Perm(f, user)
	guards = append(guards,
		clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	ok, err := e.store.Commit(ctx, guards,
		clientv3.OpPut(key, state.Marshal(state.Perm{Formation: f, User: user, Created: time.Now().UTC()})))
	if err != nil {
		return err
	}
	w := c.App.Writer
	if !ok {
		// Say which guard failed.
		if _, _, err := e.store.GetFormation(ctx, f); err != nil {
			return err
		}
		if _, err := userGuard(ctx, e.store, user); err != nil {
			return err
		}
		if !e.exists(ctx, key) {
			return state.ErrConflict
		}
		fmt.Fprintf(w, "User %s may already push to %s: nothing to do\n", user, f)
		return nil
	}
	fmt.Fprintf(w, "Granting %s access to %s... done\n", user, f)
	if admin, err := e.store.IsAdmin(ctx, user); err != nil {
		return err
	} else if admin {
		fmt.Fprintf(w, "%s is an admin and may push to every formation anyway; the permission counts if it stops being one.\n", user)
	}
	return nil
}

// exists reports whether key exists; errors count as "exists" so callers
// do not report a missing key they could not read.
func (e *env) exists(ctx context.Context, key string) bool {
	resp, err := e.client.Get(ctx, key, clientv3.WithCountOnly())
	return err != nil || resp.Count > 0
}

func permsRevoke(c *cli.Context, e *env, args []string) error {
	f, user, err := formationAndUser(c, e, args)
	if err != nil {
		return err
	}
	ctx, k := c.Context, e.keys()
	key := k.Perm(f, user)
	ok, err := e.store.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)}, clientv3.OpDelete(key))
	if err != nil {
		return err
	}
	if !ok {
		if _, err := userGuard(ctx, e.store, user); err != nil {
			return err
		}
		return fmt.Errorf("user %s holds no permission on %s: see deisctl perms -f %s: %w", user, f, f, state.ErrNotFound)
	}
	fmt.Fprintf(c.App.Writer, "Revoking %s's access to %s... done\n", user, f)
	if admin, err := e.store.IsAdmin(ctx, user); err != nil {
		return err
	} else if admin {
		fmt.Fprintf(c.App.Writer, "%s is an admin, so it may still push to %s.\n", user, f)
	}
	return nil
}

// permJSON is one row of deisctl perms: a user granted the formation, or an
// admin (who may push to every formation).
type permJSON struct {
	User    string    `json:"user"`
	Admin   bool      `json:"admin"`
	Granted bool      `json:"granted"`
	Created time.Time `json:"created"`
}

func permsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "-f FORMATION [--json]")
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	ctx := c.Context
	a, err := readAccounts(ctx, e.store)
	if err != nil {
		return err
	}
	byUser := map[string]*permJSON{}
	for _, name := range a.admins() {
		p := &permJSON{User: name, Admin: true}
		if r := a.user(name); r != nil {
			p.Created = r.Value.Created
		}
		byUser[name] = p
	}
	for _, g := range a.perms {
		if !strings.HasPrefix(g.Key, e.keys().Perms(f)) {
			continue
		}
		name := state.Base(g.Key)
		p, ok := byUser[name]
		if !ok {
			p = &permJSON{User: name}
			byUser[name] = p
		}
		p.Granted, p.Created = true, g.Value.Created
	}
	out := make([]permJSON, 0, len(byUser))
	for _, name := range sortedKeys(byUser) {
		out = append(out, *byUser[name])
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	rows := make([][]string, 0, len(out))
	for _, p := range out {
		access := "granted"
		if p.Admin {
			access = "admin (all formations)"
		}
		rows = append(rows, []string{p.User, access, fmtTime(p.Created)})
	}
	fmt.Fprintf(c.App.Writer, "=== %s: who may push\n", f)
	return printTable(c.App.Writer, []string{"USER", "ACCESS", "SINCE"}, rows)
}
