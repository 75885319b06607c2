package ctl

import (
	"crypto/tls"
	"errors"
	"strings"

	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdconn"
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

// user is the name deisctl acts as, for messages.
func (e *env) user() string { return e.who.String() }

// explainDenied turns etcd's refusal of a command into one line that names
// the user, the formation and the fix (etcdauth.Denied); other errors, and
// refusals already explained, pass through.
func explainDenied(c *cli.Context, e *env, err error) error {
	if !etcdauth.IsPermissionDenied(err) || strings.Contains(err.Error(), "ask an administrator") {
		return err
	}
	f := ""
	if hasFlag(c, "formation") {
		f, _ = formationName(c)
	}
	return etcdauth.Denied(err, e.user(), f)
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
