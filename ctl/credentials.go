package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

// Files of a credentials directory (AUTH.md 2): what every binary finds
// its identity in.
const (
	credsCA        = "ca.crt"
	credsCert      = "client.crt"
	credsKey       = "client.key"
	credsEndpoints = "endpoints"
	credsPrefix    = "prefix"
)

// userCertTTL is how long a user's certificate is valid.
const userCertTTL = pki.DefaultLeafTTL

// credentialFlags are users:create's and users:credentials' flags.
func credentialFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ca", EnvVars: []string{"DEIS_CA_DIR"},
			Usage: "the platform CA's directory (ca.crt and ca.key: DATA_DIR/pki of the first coordinator) that signs the user's certificate"},
		&cli.StringFlag{Name: "out", Usage: "directory to write the user's credentials to (default ./deis-credentials-NAME; it must not exist)"},
	}
}

// loadCA reads the CA that signs users' certificates, with an error that
// says where it is.
func loadCA(c *cli.Context) (*pki.CA, error) {
	dir := c.String("ca")
	if dir == "" {
		return nil, errors.New("the user's certificate is signed with the platform CA's key: pass --ca DIR (DATA_DIR/pki of the first coordinator; with make run, .data/coordinator/pki) or set DEIS_CA_DIR")
	}
	ca, err := pki.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("--ca %s: %w", dir, err)
	}
	return ca, nil
}

// credentialsDir is where the credentials of user go; it must not exist
// yet, so nobody's credentials are overwritten.
func credentialsDir(c *cli.Context, user string) (string, error) {
	dir := c.String("out")
	if dir == "" {
		dir = "deis-credentials-" + user
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(abs); err == nil {
		return "", fmt.Errorf("%s already exists: pass --out with a new directory (credentials are never overwritten)", abs)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	return abs, nil
}

// writeCredentials issues user's client certificate (its Common Name is the
// user's etcd user, Names.User) and writes a credentials directory: the CA,
// the certificate and key (0600), the etcd endpoints deisctl used, and the
// prefix when it is not the default. The directory is made 0700 and
// removed again on failure.
func writeCredentials(ca *pki.CA, cfg etcdconn.Config, user, dir string) (*pki.Leaf, error) {
	leaf, err := ca.IssueClient(etcdauth.NewNames(cfg.Prefix).User(user), userCertTTL)
	if err != nil {
		return nil, err
	}
	eps := cfg.Endpoints
	if len(eps) == 0 {
		eps = []string{etcdconn.DefaultEndpoint}
	}
	err = func() error {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if _, _, err := leaf.WriteFiles(dir, strings.TrimSuffix(credsCert, ".crt")); err != nil {
			return err
		}
		if err := ca.WriteCA(filepath.Join(dir, credsCA)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, credsEndpoints), []byte(strings.Join(eps, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		if p := state.NewKeys(cfg.Prefix).Prefix; p != state.NewKeys("").Prefix {
			return os.WriteFile(filepath.Join(dir, credsPrefix), []byte(p+"\n"), 0o644)
		}
		return nil
	}()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("write the credentials of %s to %s: %w", user, dir, err)
	}
	return leaf, nil
}

// printCredentials tells the administrator what to hand over.
func printCredentials(c *cli.Context, user, dir string, leaf *pki.Leaf) {
	w := c.App.Writer
	fmt.Fprintf(w, "Credentials of %s (certificate for %s, valid until %s) written to %s\n",
		user, leaf.Cert.Subject.CommonName, leaf.Cert.NotAfter.UTC().Format(time.DateOnly), dir)
	fmt.Fprintf(w, "Give %s that directory to copy to ~/.config/deis (or to point DEIS_CREDENTIALS at); it holds a private key: send it privately.\n", user)
}

func usersCredentials(c *cli.Context, e *env, args []string) error {
	name, err := userArg(c, args, "NAME [--ca DIR] [--out DIR]")
	if err != nil {
		return err
	}
	ca, err := loadCA(c)
	if err != nil {
		return err
	}
	dir, err := credentialsDir(c, name)
	if err != nil {
		return err
	}
	var u state.User
	found, err := getOptional(c.Context, e.store, e.keys().User(name), &u)
	if err != nil {
		return err
	}
	if !found && name != state.BootstrapAdmin {
		return errUnknownUser(name)
	}
	leaf, err := writeCredentials(ca, e.cfg, name, dir)
	if err != nil {
		return err
	}
	printCredentials(c, name, dir, leaf)
	fmt.Fprintf(c.App.Writer, "Certificates issued before stay valid until they expire; to shut %s out now, deisctl users:destroy %s (then create it again).\n", name, name)
	return nil
}
