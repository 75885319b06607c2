package ctl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/urfave/cli/v2"
)

// identify loads deisctl's certificate, when it has one, for the platform's
// TLS servers (agent API, build logs), and names the user it acts as.
func (e *env) identify(cfg etcdconn.Config) error {
	if cfg.CertFile != "" && cfg.KeyFile != "" && cfg.CAFile != "" {
		creds, err := access.LoadCreds(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return err
		}
		e.creds = creds
		e.who = access.Parse(cfg.Prefix, creds.Identity())
		return nil
	}
	e.who = access.Parse(cfg.Prefix, cfg.Username)
	if e.who.CN == "" {
		e.who.CN = "you"
	}
	return nil
}

// errNoCredentials says how deisctl gets a certificate.
var errNoCredentials = errors.New("deisctl has no certificate for the platform's servers (agent API, build logs): use the credentials directory deisctl users:create wrote (--credentials DIR, DEIS_CREDENTIALS, or ~/.config/deis)")

// platformTLS dials the agent API and the coordinator's build logs with
// deisctl's certificate.
func (e *env) platformTLS() (*tls.Config, error) {
	if e.creds == nil {
		return nil, errNoCredentials
	}
	return e.creds.ClientTLS(), nil
}

// nodeTLS dials node's agent API with deisctl's certificate, accepting
// only that node's.
func (e *env) nodeTLS(node string) *tls.Config {
	return e.creds.NodeTLS(e.keys().Prefix, node)
}

// user is the name deisctl acts as, for messages.
func (e *env) user() string { return e.who.String() }

// explainDenied turns etcd's refusal of a command into one line that names
// the user, the formation and the fix (etcdauth.Denied); other errors, and
// refusals already explained, pass through.
func explainDenied(c *cli.Context, e *env, args []string, err error) error {
	if !etcdauth.IsPermissionDenied(err) || strings.Contains(err.Error(), "ask an administrator") {
		return err
	}
	f := ""
	switch name := c.Command.Name; {
	case hasFlag(c, "formation"):
		f, _ = formationName(c)
	case strings.HasPrefix(name, "formations:") && len(args) > 0:
		f = args[0] // formations:destroy NAME, formations:info NAME
	case name == "keys:add":
		// SSH keys are keyed by fingerprint, not by user: only
		// administrators add them.
		return fmt.Errorf("%s may not add SSH keys: ask an administrator to run deisctl keys:add PATH.pub --user %s: %w", e.user(), e.user(), err)
	}
	if f != "" && e.who.Kind == access.User && e.granted(c.Context, f) {
		return fmt.Errorf("%s may change %s, but %s also reads what only administrators may (other formations' containers, the nodes' state): ask an administrator to run it: %w", e.user(), f, c.Command.Name, err)
	}
	return oneLine(etcdauth.Denied(err, e.user(), f), err)
}

// refusal is a refusal printed as its one line, without the error of etcd
// it wraps (still there for errors.Is).
type refusal struct {
	msg string
	err error
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.err }

// oneLine drops cause's text from the end of d's.
func oneLine(d, cause error) error {
	return &refusal{msg: strings.TrimSuffix(d.Error(), ": "+cause.Error()), err: d}
}

// granted reports whether deisctl's user holds formation f's grant.
func (e *env) granted(ctx context.Context, f string) bool {
	var p state.Perm
	found, err := getOptional(ctx, e.store, e.keys().Perm(f, e.who.Name), &p)
	return err == nil && found
}

// hasFlag reports whether the running command defines flag name.
func hasFlag(c *cli.Context, name string) bool {
	if c.Command == nil {
		return false
	}
	for _, fl := range c.Command.Flags {
		for _, n := range fl.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// formationView is what a command about formation f reads: the whole
// view, or, for a user who may not read every formation's keys (only an
// administrator may), formation f's keys with the nodes and their
// heartbeats. full reports which: questions about other formations (the
// load of nodes, drains) have no answer in the narrow one.
func formationView(ctx context.Context, e *env, f string) (st *view.State, full bool, err error) {
	st, err = view.Load(ctx, e.store.KV, e.keys().Prefix)
	if err == nil || !etcdauth.IsPermissionDenied(err) {
		return st, err == nil, err
	}
	st, err = view.LoadFormation(ctx, e.store.KV, e.keys().Prefix, f)
	if err != nil {
		return nil, false, err
	}
	nodes, err := view.LoadFamilies(ctx, e.store.KV, e.keys().Prefix, view.Nodes, view.Heartbeats)
	if err != nil {
		return nil, false, err
	}
	st.Nodes, st.Alive = nodes.Nodes, nodes.Alive
	return st, false, nil
}

// formationWorld is readWorld for a user granted formation f: its keys,
// the nodes with their heartbeats and drains, and the agents' status
// reports (container names, states and addresses of every formation, no
// env; docs/security.md) — never the runtime databags, which hold every
// formation's env. The other formations and the nodes' loads are left
// out. f's containers come from the reports alone (world.reports): a
// container the scheduler placed but no agent reported yet does not show,
// and every reported one counts as desired (only the databags say which
// are being retired).
func formationWorld(ctx context.Context, e *env, f string) (*world, error) {
	st, err := view.LoadFormation(ctx, e.store.KV, e.keys().Prefix, f)
	if err != nil {
		return nil, err
	}
	rep, err := view.LoadFamilies(ctx, e.store.KV, e.keys().Prefix, view.Nodes, view.Heartbeats, view.Drains, view.NodeStatuses)
	if err != nil {
		return nil, err
	}
	st.Nodes, st.Alive, st.DrainDocs = rep.Nodes, rep.Alive, rep.DrainDocs
	w := &world{st: st, reports: rep, alive: rep.Alive, drains: map[string]state.Drain{}}
	if form := st.Formations[f]; form != nil {
		w.formations = append(w.formations, *form)
	}
	for _, l := range st.Layers[f] {
		w.layers = append(w.layers, *l)
	}
	for _, n := range sortedKeys(rep.Nodes) {
		w.nodes = append(w.nodes, *rep.Nodes[n])
	}
	for n, d := range rep.DrainDocs {
		w.drains[n] = *d
	}
	return w, nil
}

// readFormationWorld is readWorld, or for a user who may not read the
// whole installation, formationWorld of f.
func readFormationWorld(ctx context.Context, e *env, f string) (*world, error) {
	w, err := readWorld(ctx, e.store)
	if etcdauth.IsPermissionDenied(err) && f != "" {
		return formationWorld(ctx, e, f)
	}
	return w, err
}

// grantedFormations lists the formations deisctl's user was granted: the
// formation roles of its etcd user (etcd lets a user read its own), each
// formation's key read one by one. Only formations that exist are listed.
func grantedFormations(ctx context.Context, e *env) ([]state.Entry[state.Formation], error) {
	if e.who.Kind != access.User {
		return nil, fmt.Errorf("%s may not list the formations: ask an administrator: %w", e.user(), access.ErrDenied)
	}
	u, err := e.client.UserGet(ctx, e.who.CN)
	if err != nil {
		return nil, fmt.Errorf("read the roles of %s: %w", e.who.CN, err)
	}
	pre := etcdauth.NewNames(e.keys().Prefix).Formation("")
	var out []state.Entry[state.Formation]
	for _, r := range u.Roles {
		f, ok := strings.CutPrefix(r, pre)
		if !ok || state.ValidateName("formation", f) != nil {
			continue
		}
		var form state.Formation
		found, err := getOptional(ctx, e.store, e.keys().Formation(f), &form)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, state.Entry[state.Formation]{Key: e.keys().Formation(f), Value: form})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
