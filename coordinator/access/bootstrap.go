package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/embedetcd"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CAName is the Common Name of a CA the coordinator creates.
const CAName = "deis platform CA"

// AdminUser is the administrator whose credential the coordinator that
// creates the CA writes for the user running it.
const AdminUser = state.BootstrapAdmin

// certTTL is the lifetime of the certificates a coordinator issues itself
// at every start (etcd's, root's, its own).
const certTTL = pki.DefaultLeafTTL

// PKIDir is where a coordinator keeps the CA it created and the
// certificates it issues itself.
func PKIDir(dataDir string) string { return filepath.Join(dataDir, "pki") }

// LoadCA loads the operator's CA (caCert and caKey), or the one in
// DATA_DIR/pki. create allows making one there when there is none (the
// first coordinator of an installation); created says it did.
func LoadCA(dataDir, caCert, caKey string, create bool) (ca *pki.CA, created bool, err error) {
	switch {
	case caCert != "" || caKey != "":
		if caCert == "" || caKey == "" {
			return nil, false, errors.New("give both --ca-cert and --ca-key (the platform CA's certificate and key)")
		}
		ca, err := pki.Load(caCert, caKey)
		return ca, false, err
	case create:
		return pki.LoadOrCreate(PKIDir(dataDir), CAName)
	}
	if _, err := os.Stat(filepath.Join(PKIDir(dataDir), pki.CAKeyFile)); err != nil {
		return nil, false, fmt.Errorf("no platform CA: with an external etcd give --ca-cert and --ca-key (the CA that etcd trusts for client certificates; the first coordinator's DATA_DIR/pki, or what deis-coordinator bootstrap made), or copy that directory to %s", PKIDir(dataDir))
	}
	ca, err = pki.LoadDir(PKIDir(dataDir))
	return ca, false, err
}

// CAFile is a path holding the CA's certificate: written into DATA_DIR/pki
// when the CA came from elsewhere.
func CAFile(dataDir string, ca *pki.CA) (string, error) {
	p := filepath.Join(PKIDir(dataDir), pki.CACertFile)
	if b, err := os.ReadFile(p); err == nil && string(b) == string(ca.CertPEM) {
		return p, nil
	}
	if err := os.MkdirAll(PKIDir(dataDir), 0o700); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(PKIDir(dataDir), pki.CAKeyFile)); err == nil {
		return "", fmt.Errorf("%s holds another CA than --ca-cert: move DATA_DIR/pki away or give its CA", PKIDir(dataDir))
	}
	return p, ca.WriteCA(p)
}

// EtcdTLS issues the embedded etcd's peer certificate (server and client
// usage: members dial each other) for the hosts of its URLs, loopback and
// this machine's name, and returns its files.
func EtcdTLS(dataDir string, ca *pki.CA, urls ...string) (*embedetcd.TLS, error) {
	hosts := []string{"127.0.0.1", "localhost", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, strings.ToLower(h))
	}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("etcd URL %q: %w", u, err)
		}
		if h := pu.Hostname(); h != "" && !has(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	leaf, err := ca.IssuePeer("etcd", hosts, certTTL)
	if err != nil {
		return nil, err
	}
	cert, key, err := leaf.WriteFiles(PKIDir(dataDir), "etcd")
	if err != nil {
		return nil, err
	}
	caFile, err := CAFile(dataDir, ca)
	if err != nil {
		return nil, err
	}
	return &embedetcd.TLS{CertFile: cert, KeyFile: key, TrustedCAFile: caFile}, nil
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ClientConfig issues a client certificate for identity, writes it as
// DATA_DIR/pki/<file>.{crt,key} and returns base with it (and the CA as
// the trusted CA unless base names one).
func ClientConfig(dataDir string, ca *pki.CA, file, identity string, base etcdconn.Config) (etcdconn.Config, error) {
	leaf, err := ca.IssueClient(identity, certTTL)
	if err != nil {
		return base, err
	}
	cert, key, err := leaf.WriteFiles(PKIDir(dataDir), file)
	if err != nil {
		return base, err
	}
	caFile, err := CAFile(dataDir, ca)
	if err != nil {
		return base, err
	}
	cfg := base
	cfg.Credentials, cfg.Username, cfg.Password = "", "", ""
	cfg.CertFile, cfg.KeyFile = cert, key
	if cfg.CAFile == "" {
		cfg.CAFile = caFile
	}
	return cfg, nil
}

// Secure turns etcd's authentication on (root: a user with no password, so
// only a certificate with Common Name "root" of a CA etcd trusts is root),
// and makes the coordinators' user and role and the administrator (its
// record and etcd user). root is a client authenticated as root (or any
// client while auth is still off). It is idempotent.
func Secure(ctx context.Context, root *clientv3.Client, prefix string) error {
	if err := etcdauth.Enable(ctx, root, ""); err != nil {
		return err
	}
	if err := etcdauth.EnsureCoordinator(ctx, root, prefix, ""); err != nil {
		return err
	}
	store := state.NewStore(root, prefix)
	err := store.Create(ctx, store.Keys.User(AdminUser), state.User{Name: AdminUser, Admin: true, Created: time.Now().UTC()})
	if err != nil && !errors.Is(err, state.ErrExists) {
		return fmt.Errorf("administrator record: %w", err)
	}
	var u state.User
	if _, err := store.Get(ctx, store.Keys.User(AdminUser), &u); err != nil {
		return fmt.Errorf("administrator record: %w", err)
	}
	return etcdauth.EnsureUser(ctx, root, prefix, AdminUser, etcdauth.UserOptions{Admin: u.Admin})
}

// WriteAdmin writes the administrator's credential into dir (deisctl's
// ~/.config/deis): a client certificate for etcd user <p>:user-admin, the
// CA, the endpoints and the prefix. A credential already there is kept
// unless replace; a replaced one is moved aside to dir.old-TIME first.
func WriteAdmin(dir string, ca *pki.CA, endpoints []string, prefix string, replace bool, log *slog.Logger) (bool, error) {
	if dir == "" {
		return false, nil
	}
	if etcdconn.HasCredentials(dir) {
		if !replace {
			return false, nil
		}
		old := fmt.Sprintf("%s.old-%d", dir, time.Now().Unix())
		if err := os.Rename(dir, old); err != nil {
			return false, fmt.Errorf("move the old credential %s aside: %w", dir, err)
		}
		log.Warn("moved a credential of another CA aside", "from", dir, "to", old)
	}
	leaf, err := ca.IssueClient(etcdauth.NewNames(prefix).User(AdminUser), certTTL)
	if err != nil {
		return false, err
	}
	err = etcdconn.WriteCredentials(dir, etcdconn.Credentials{CAPEM: ca.CertPEM, CertPEM: leaf.CertPEM, KeyPEM: leaf.KeyPEM,
		Endpoints: endpoints, Prefix: state.NewKeys(prefix).Prefix})
	return err == nil, err
}
