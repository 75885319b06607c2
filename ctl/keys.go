package ctl

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/ssh"
)

func (b *builder) keyCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "keys:add",
			Category:  "keys",
			Usage:     "register a user's SSH public key: it may git push to the formations the user may access",
			ArgsUsage: "PATH.pub",
			Flags: []cli.Flag{&cli.StringFlag{Name: "user", Value: state.BootstrapAdmin,
				Usage: "user the key belongs to: one created with deisctl users:create, or admin"}},
		}, keysAdd),
		b.cmd(&cli.Command{
			Name:     "keys:list",
			Aliases:  []string{"keys"},
			Category: "keys",
			Usage:    "list registered SSH keys and the users they belong to",
			Flags:    []cli.Flag{&cli.StringFlag{Name: "user", Usage: "only the keys of this user"}, jsonFlag()},
		}, keysList),
		b.cmd(&cli.Command{
			Name:      "keys:remove",
			Category:  "keys",
			Usage:     "remove a registered SSH key",
			ArgsUsage: "FINGERPRINT",
		}, keysRemove),
	}
}

// parseKey turns an authorized_keys line into the key to register.
func parseKey(data []byte, user string) (state.SSHKey, error) {
	pk, comment, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return state.SSHKey{}, err
	}
	return state.SSHKey{
		Fingerprint: ssh.FingerprintSHA256(pk),
		User:        user,
		PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))),
		Comment:     comment,
		Created:     time.Now().UTC(),
	}, nil
}

func keysAdd(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "PATH.pub [--user NAME]")
	}
	user := c.String("user")
	if err := state.ValidateName("user", user); err != nil {
		return err
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return fmt.Errorf("read public key: %w", err)
	}
	key, err := parseKey(data, user)
	if err != nil {
		return fmt.Errorf("%s is not an SSH public key (%v): pass the .pub file, like ~/.ssh/id_ed25519.pub", args[0], err)
	}
	k := e.keys().SSHKey(state.SSHKeyID(key.Fingerprint))
	registered := func() error {
		var have state.SSHKey
		found, err := getOptional(c.Context, e.store, k, &have)
		if err != nil {
			return err
		}
		if found {
			return fmt.Errorf("key %s is already registered (to user %s): see deisctl keys:list, or remove it first with deisctl keys:remove %s", key.Fingerprint, have.User, key.Fingerprint)
		}
		return nil
	}
	if err := registered(); err != nil {
		return err
	}
	// The user must exist (or be the bootstrap admin) when the key is written.
	guards, err := userGuard(c.Context, e.store, user)
	if err != nil {
		return err
	}
	ok, err := e.store.Commit(c.Context, append(guards, clientv3.Compare(clientv3.CreateRevision(k), "=", 0)),
		clientv3.OpPut(k, state.Marshal(key)))
	if err != nil {
		return err
	}
	if !ok { // lost a race: say to what
		if err := registered(); err != nil {
			return err
		}
		if _, err := userGuard(c.Context, e.store, user); err != nil {
			return err
		}
		return state.ErrConflict
	}
	fmt.Fprintf(c.App.Writer, "Adding %s for user %s... done\n%s\n", args[0], user, key.Fingerprint)
	return nil
}

func keysList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[--user NAME] [--json]")
	}
	user := c.String("user")
	if user != "" {
		if err := state.ValidateName("user", user); err != nil {
			return err
		}
	}
	list, _, err := state.List[state.SSHKey](c.Context, e.store.KV, e.keys().SSHKeys())
	if err != nil {
		return err
	}
	out := make([]state.SSHKey, 0, len(list))
	for _, k := range list {
		if user == "" || k.Value.User == user {
			out = append(out, k.Value)
		}
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	if len(out) == 0 {
		if user != "" {
			fmt.Fprintf(c.App.Writer, "User %s has no SSH keys: add one with deisctl keys:add ~/.ssh/id_ed25519.pub --user %s\n", user, user)
			return nil
		}
		fmt.Fprintln(c.App.Writer, "No SSH keys registered: add one with deisctl keys:add ~/.ssh/id_ed25519.pub")
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, k := range out {
		rows = append(rows, []string{k.Fingerprint, k.User, orDash(k.Comment), fmtTime(k.Created)})
	}
	return printTable(c.App.Writer, []string{"FINGERPRINT", "USER", "COMMENT", "CREATED"}, rows)
}

func keysRemove(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "FINGERPRINT")
	}
	id := state.SSHKeyID(args[0])
	if id == "" || strings.ContainsAny(id, "/ ") {
		return fmt.Errorf("invalid fingerprint %q: copy one from deisctl keys:list", args[0])
	}
	key := e.keys().SSHKey(id)
	ok, err := e.store.Commit(c.Context, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)},
		clientv3.OpDelete(key))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no key with fingerprint %s: list keys with deisctl keys:list: %w", args[0], state.ErrNotFound)
	}
	fmt.Fprintf(c.App.Writer, "Removing key %s... done\n", args[0])
	return nil
}
