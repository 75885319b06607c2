package etcdconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEndpoint is where the embedded etcd of `make run` listens: TLS
// with client certificates of the platform CA.
const DefaultEndpoint = "https://127.0.0.1:2379"

// Config is how to reach etcd.
type Config struct {
	Endpoints []string
	CAFile    string
	CertFile  string
	KeyFile   string
	Username  string
	Password  string
	Prefix    string
	// Credentials is a credentials directory (WithCredentials) that fills
	// what the other fields leave empty.
	Credentials string
	prefixSet   bool
}

// Flags returns the shared etcd flags. The endpoint flag has no default so a
// command can tell "not given" apart (the coordinator then embeds etcd).
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "etcd-endpoints", EnvVars: []string{"DEIS_ETCD_ENDPOINTS"}, Usage: "etcd client URLs, comma-separated (default " + DefaultEndpoint + ")"},
		&cli.StringFlag{Name: "etcd-cacert", EnvVars: []string{"DEIS_ETCD_CACERT"}, Usage: "CA file to verify etcd's TLS certificate"},
		&cli.StringFlag{Name: "etcd-cert", EnvVars: []string{"DEIS_ETCD_CERT"}, Usage: "client certificate file for etcd TLS"},
		&cli.StringFlag{Name: "etcd-key", EnvVars: []string{"DEIS_ETCD_KEY"}, Usage: "client key file for etcd TLS"},
		&cli.StringFlag{Name: "etcd-user", EnvVars: []string{"DEIS_ETCD_USER"}, Usage: "etcd user name"},
		&cli.StringFlag{Name: "etcd-password", EnvVars: []string{"DEIS_ETCD_PASSWORD"}, Usage: "etcd password"},
		&cli.StringFlag{Name: "credentials", EnvVars: []string{"DEIS_CREDENTIALS"}, Usage: "credentials directory (ca.crt, client.crt, client.key, endpoints, prefix): fills the etcd endpoints, CA, certificate and key not given"},
		&cli.StringFlag{Name: "prefix", EnvVars: []string{"DEIS_PREFIX"}, Value: state.DefaultPrefix, Usage: "key prefix of this installation in etcd"},
	}
}

// FromContext reads the shared flags.
func FromContext(c *cli.Context) Config {
	var eps []string
	for _, e := range c.StringSlice("etcd-endpoints") {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				eps = append(eps, p)
			}
		}
	}
	return Config{
		Endpoints: eps,
		CAFile:    c.String("etcd-cacert"),
		CertFile:  c.String("etcd-cert"),
		KeyFile:   c.String("etcd-key"),
		Username:  c.String("etcd-user"),
		Password:  c.String("etcd-password"),
		Prefix:    c.String("prefix"),

		Credentials: c.String("credentials"),
		prefixSet:   c.IsSet("prefix"),
	}
}

// Resolve fills cfg from its credentials directory (WithCredentials),
// keeping a prefix given as a flag or in the environment.
func (cfg Config) Resolve() (Config, error) {
	out, err := cfg.WithCredentials(cfg.prefixSet)
	if err != nil {
		return cfg, err
	}
	out.Credentials = ""
	return out, nil
}

// Dial connects to etcd and checks the connection with one read.
func (cfg Config) Dial(ctx context.Context) (*clientv3.Client, error) {
	cfg, err := cfg.Resolve()
	if err != nil {
		return nil, err
	}
	eps := cfg.Endpoints
	if len(eps) == 0 {
		eps = []string{DefaultEndpoint}
	}
	cc := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
		Context:     ctx,
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("etcdconn: read CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("etcdconn: %s holds no PEM certificate", cfg.CAFile)
			}
			t.RootCAs = pool
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("etcdconn: load client certificate: %w", err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = t
	}
	if cc.TLS == nil && cfg.Username == "" && anyHTTPS(eps) {
		return nil, fmt.Errorf("etcdconn: no credentials: etcd at %s needs a client certificate of the platform CA: give --credentials DIR (DEIS_CREDENTIALS; deisctl also reads %s, where the coordinator of a one-machine install writes the administrator's), or --etcd-cacert, --etcd-cert and --etcd-key", strings.Join(eps, ","), UserCredentialsDir())
	}
	if cc.TLS != nil && cfg.Username == "" && cfg.CertFile == "" && anyHTTPS(eps) {
		return nil, fmt.Errorf("etcdconn: no credentials: a CA file but no client certificate for etcd at %s: give --credentials DIR (DEIS_CREDENTIALS) or --etcd-cert and --etcd-key", strings.Join(eps, ","))
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		if terr := tlsProbe(eps, cc.TLS); terr != nil {
			return nil, terr
		}
		return nil, fmt.Errorf("etcdconn: connect to %s: %w", strings.Join(eps, ","), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Get(pctx, "health-check-"+cfg.Prefix, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if terr := tlsProbe(eps, cc.TLS); terr != nil {
			return nil, terr
		}
		if errors.Is(err, rpctypes.ErrAuthFailed) {
			return nil, fmt.Errorf("etcdconn: wrong password for etcd user %q at %s: give the right --etcd-password (DEIS_ETCD_PASSWORD), or ask an administrator to set a new one: %w", cfg.Username, strings.Join(eps, ","), err)
		}
		if errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrUserNotFound) ||
			strings.Contains(err.Error(), rpctypes.ErrPermissionDenied.Error()) || strings.Contains(err.Error(), rpctypes.ErrUserNotFound.Error()) {
			who := cfg.Username
			if who == "" {
				who = certName(cfg.CertFile)
			}
			return nil, fmt.Errorf("etcdconn: etcd at %s refused %s: these credentials were revoked or never granted (a removed node joins again with a new token from deisctl nodes:add; a user asks an administrator for new credentials), or give others with --credentials: %w", strings.Join(eps, ","), who, err)
		}
		return nil, fmt.Errorf("etcdconn: etcd at %s does not answer (is the coordinator or etcd running? set --etcd-endpoints or DEIS_ETCD_ENDPOINTS): %w", strings.Join(eps, ","), err)
	}
	return cli, nil
}

// tlsProbe explains a failed dial when TLS is the cause: gRPC only reports
// "context deadline exceeded", so it handshakes with each https endpoint
// itself and returns the first handshake error, or nil.
func tlsProbe(eps []string, t *tls.Config) error {
	if t == nil {
		return nil
	}
	for _, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "https" {
			continue
		}
		c := t.Clone()
		c.ServerName = u.Hostname()
		c.NextProtos = []string{"h2"}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", u.Host, c)
		if err == nil {
			// With TLS 1.3 a rejected client certificate shows on the first read.
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
			var ne net.Error
			if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				continue
			}
		}
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			continue // not listening: not a TLS problem
		}
		return fmt.Errorf("etcdconn: TLS with etcd at %s failed (check --credentials, or --etcd-cacert, --etcd-cert, --etcd-key): %w", ep, pki.Explain(err))
	}
	return nil
}

func anyHTTPS(eps []string) bool {
	for _, ep := range eps {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

// certName is the etcd user a client certificate file names (its Common
// Name), for errors.
func certName(path string) string {
	if path == "" {
		return "an anonymous client"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "the certificate in " + path
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "the certificate in " + path
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "the certificate in " + path
	}
	return fmt.Sprintf("user %q (the certificate in %s)", c.Subject.CommonName, path)
}
