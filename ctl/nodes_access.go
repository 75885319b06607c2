package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// defaultNodeLabels are the labels of a node added without --labels: the
// agent's own default (a runtime and a proxy).
const defaultNodeLabels = "role=runtime,role=proxy"

func (b *builder) nodeAccessCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:      "nodes:add",
			Category:  "nodes",
			Usage:     "let a node join: prints a one-time join token and the deis-agent command to run on the node",
			ArgsUsage: "NODE",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "labels", Value: defaultNodeLabels, Usage: "the node's labels, k=v comma-separated (a key may repeat): role=proxy gives it the proxies' reads"},
				&cli.DurationFlag{Name: "ttl", Value: jointoken.DefaultTTL, Usage: "how long the token is valid (at most 24h)"},
				jsonFlag(),
			},
		}, nodesAdd),
		b.cmd(&cli.Command{
			Name:      "nodes:remove",
			Category:  "nodes",
			Usage:     "revoke a node's etcd user and certificate: it gets no more work and its containers move to other nodes",
			ArgsUsage: "NODE",
		}, nodesRemove),
	}
}

// nodeAddJSON is nodes:add --json.
type nodeAddJSON struct {
	Node          string            `json:"node"`
	Labels        map[string]string `json:"labels"`
	Token         string            `json:"token"`
	Expires       time.Time         `json:"expires"`
	Coordinator   string            `json:"coordinator"`
	CAFingerprint string            `json:"caFingerprint"`
	Command       string            `json:"command"`
}

func parseNodeLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("invalid label %q: use key=value, comma-separated", p)
		}
		if out[k] != "" {
			out[k] += "," + v
		} else {
			out[k] = v
		}
	}
	return out, nil
}

func nodesAdd(c *cli.Context, e *env, args []string) error {
	name, err := nodeArg(c, args)
	if err != nil {
		return err
	}
	labels, err := parseNodeLabels(c.String("labels"))
	if err != nil {
		return err
	}
	prefix := e.keys().Prefix
	var m jointoken.Member
	if found, err := getOptional(c.Context, e.store, jointoken.MemberKey(prefix, name), &m); err != nil {
		return err
	} else if found {
		return fmt.Errorf("node %s has joined already (%s): to give it new credentials run deisctl nodes:remove %s, delete <state-dir>/credentials on the node, then nodes:add it again", name, fmtTime(m.Joined), name)
	}
	var info jointoken.JoinInfo
	if found, err := getOptional(c.Context, e.store, jointoken.JoinInfoKey(prefix), &info); err != nil {
		return err
	} else if !found {
		return errors.New("no coordinator serves joins yet: start deis-coordinator first (it advertises its join URL and the CA fingerprint)")
	}
	tok, err := jointoken.New(e.client, prefix).Create(c.Context, name, labels, c.Duration("ttl"))
	if err != nil {
		return err
	}
	cmd := fmt.Sprintf("deis-agent --name %s --join %s --coordinator %s --ca-fingerprint %s", name, tok.Secret, info.URL, info.CAFingerprint)
	if c.Bool("json") {
		return printJSON(c.App.Writer, nodeAddJSON{Node: name, Labels: labels, Token: tok.Secret, Expires: tok.Expires,
			Coordinator: info.URL, CAFingerprint: info.CAFingerprint, Command: cmd})
	}
	fmt.Fprintf(c.App.Writer, "Join token for node %s (labels %s), valid once until %s.\nOn the node, run:\n\n  %s\n\n",
		name, c.String("labels"), fmtTime(tok.Expires), cmd)
	return nil
}

func nodesRemove(c *cli.Context, e *env, args []string) error {
	name, err := nodeArg(c, args)
	if err != nil {
		return err
	}
	prefix := e.keys().Prefix
	key := jointoken.MemberKey(prefix, name)
	resp, err := e.client.Get(c.Context, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("node %s has not joined (no credentials to revoke): list nodes with deisctl nodes:list: %w", name, state.ErrNotFound)
	}
	var m jointoken.Member
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return fmt.Errorf("node %s: unreadable join record: %w", name, err)
	}
	serial, ok := new(big.Int).SetString(m.Serial, 16)
	if !ok {
		return fmt.Errorf("node %s: its join record has no certificate serial", name)
	}
	rev := jointoken.Revocation{Node: name, Serial: m.Serial, At: time.Now().UTC()}
	// One transaction: the record goes and the serial is revoked, or
	// nothing changes.
	ok, err = e.store.Commit(c.Context, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)},
		clientv3.OpDelete(key), clientv3.OpPut(jointoken.RevocationKey(prefix, serial), state.Marshal(rev)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("node %s's join record changed while it was being removed: run the command again", name)
	}
	fmt.Fprintf(c.App.Writer, "Removed node %s: its etcd user and certificate (serial %s) are revoked; its containers move to other nodes.\nTo let it join again: delete <state-dir>/credentials on it and run deisctl nodes:add %s.\n", name, m.Serial, name)
	return nil
}
