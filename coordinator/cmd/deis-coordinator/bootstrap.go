package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/coordinator/access"
	"github.com/deis/deis/pkg/embedetcd"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/logging"
	"github.com/deis/deis/pkg/pki"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// booted is what bootstrap set up: the CA, the embedded etcd if any, a
// client as etcd's root (provisioning, joins, the access loop) and one as
// the coordinators' own user (everything else).
type booted struct {
	ca   *pki.CA
	ec   etcdconn.Config // endpoints and prefix; the coordinator's identity
	srv  *embedetcd.Server
	root *clientv3.Client
	cli  *clientv3.Client
	log  *slog.Logger
	// lock keeps joins and access sync passes apart.
	lock sync.Mutex
}

func (b *booted) Close() {
	if b.cli != nil {
		b.cli.Close()
	}
	if b.root != nil {
		b.root.Close()
	}
	if b.srv != nil {
		b.srv.Close()
	}
}

// bootstrap loads or creates the platform CA, starts the embedded etcd with
// TLS and client certificates when no endpoints are given, turns etcd's
// auth on with root, the coordinators' user and the administrator, writes
// the administrator's credential, and dials as root and as the
// coordinator.
func bootstrap(ctx context.Context, c *cli.Context, log *slog.Logger, dataDir string, ec etcdconn.Config) (_ *booted, err error) {
	b := &booted{log: log}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	embedded := len(ec.Endpoints) == 0
	ca, created, err := access.LoadCA(dataDir, c.String("ca-cert"), c.String("ca-key"), embedded)
	if err != nil {
		return nil, err
	}
	b.ca = ca
	if created {
		log.Info("created the platform CA", "dir", access.PKIDir(dataDir), "fingerprint", ca.Fingerprint())
	}
	if embedded {
		tlsFiles, err := access.EtcdTLS(dataDir, ca, c.String("etcd-listen-client"), c.String("etcd-listen-peer"))
		if err != nil {
			return nil, err
		}
		log.Info("starting embedded etcd (TLS, client certificates, auth)", "dir", filepath.Join(dataDir, "etcd"), "client", c.String("etcd-listen-client"))
		b.srv, err = embedetcd.StartTLS(filepath.Join(dataDir, "etcd"), c.String("etcd-listen-client"), c.String("etcd-listen-peer"), tlsFiles)
		if err != nil {
			return nil, err
		}
		ec.Endpoints = []string{b.srv.ClientURL}
	}
	rootCfg, err := access.ClientConfig(dataDir, ca, "root", etcdauth.Root, ec)
	if err != nil {
		return nil, err
	}
	if b.root, err = rootCfg.Dial(ctx); err != nil {
		return nil, fmt.Errorf("dial etcd as root with the platform CA (etcd must trust it for client certificates, --client-cert-auth): %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = access.Secure(sctx, b.root, ec.Prefix)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("secure etcd: %w", err)
	}
	if embedded || created || c.IsSet("admin-credentials") {
		dir := c.String("admin-credentials")
		wrote, err := access.WriteAdmin(dir, ca, ec.Endpoints, ec.Prefix, created, log)
		if err != nil {
			return nil, fmt.Errorf("administrator's credential: %w", err)
		}
		if wrote {
			log.Info("wrote the administrator's credential: deisctl uses it without flags", "dir", dir)
		}
	}
	coordCfg := ec
	if ec.CertFile == "" && ec.Username == "" {
		if coordCfg, err = access.ClientConfig(dataDir, ca, "coordinator", etcdauth.NewNames(ec.Prefix).Coordinator(), ec); err != nil {
			return nil, err
		}
	}
	if b.cli, err = coordCfg.Dial(ctx); err != nil {
		return nil, err
	}
	b.ec = ec
	return b, nil
}

// serveJoins serves the join endpoint and advertises it.
func (b *booted) serveJoins(ctx context.Context, c *cli.Context, start func(string, func() error)) error {
	addr, joinURL := c.String("join-addr"), c.String("join-url")
	if addr == "" {
		return nil
	}
	u, err := url.Parse(joinURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("--join-url %q: give https://HOST:PORT", joinURL)
	}
	hosts := []string{u.Hostname(), c.String("ssh-host")}
	if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	tc, err := access.JoinTLS(b.ca, hosts)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("join endpoint: %w: pick another --join-addr", err)
	}
	srv := &http.Server{Handler: &access.JoinServer{Root: b.root, CA: b.ca, Prefix: b.ec.Prefix, Endpoints: b.ec.Endpoints, Log: b.log.With("part", "join"), Lock: &b.lock},
		TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second}
	start("join endpoint", func() error {
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.ServeTLS(l, "", ""); err != nil && err != http.ErrServerClosed {
			return err
		}
		return nil
	})
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := access.Advertise(actx, b.cli, b.ec.Prefix, joinURL, b.ca); err != nil {
		return fmt.Errorf("advertise the join endpoint: %w", err)
	}
	return nil
}

// bootstrapCommand prepares an external etcd cluster for the platform:
// the CA, certificates for etcd's members, etcd's auth with the
// coordinators' user and the administrator, and the administrator's
// credential.
func bootstrapCommand() *cli.Command {
	return &cli.Command{
		Name:  "bootstrap",
		Usage: "for an external etcd: create the platform CA and etcd's member certificates, then (with --etcd-endpoints) turn etcd's auth on and write the administrator's credential",
		Description: `Run once, on the first coordinator's machine:

  1. deis-coordinator bootstrap --data-dir /var/lib/deis --etcd-host 10.0.0.1 --etcd-host 10.0.0.2 --etcd-host 10.0.0.3
     creates DATA_DIR/pki (the CA) and DATA_DIR/pki/etcd-HOST.{crt,key} for each member, and prints
     the TLS flags to start each etcd member with.
  2. Start etcd with them (client and peer TLS, --client-cert-auth, --trusted-ca-file the CA).
  3. deis-coordinator bootstrap --data-dir /var/lib/deis --etcd-endpoints https://10.0.0.1:2379,...
     turns auth on (root: certificate only, from the CA), makes the coordinators' user and the
     administrator, and writes the administrator's credential (--admin-credentials).
     An etcd whose auth is on already: give its root with --etcd-user root --etcd-password.

Then start every coordinator with --etcd-endpoints and --ca-cert/--ca-key (or a copy of DATA_DIR/pki).`,
		Flags: append(etcdconn.Flags(), logging.Flag(),
			&cli.StringSliceFlag{Name: "etcd-host", Usage: "an etcd member's IP address or DNS name: issue its certificate (repeatable)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: []string{"DEIS_DATA_DIR"}, Value: "/var/lib/deis", Usage: "the coordinator's data directory: the CA goes to DATA_DIR/pki"},
			&cli.StringFlag{Name: "ca-cert", EnvVars: []string{"DEIS_CA_CERT"}, Usage: "an operator's CA certificate instead of DATA_DIR/pki"},
			&cli.StringFlag{Name: "ca-key", EnvVars: []string{"DEIS_CA_KEY"}, Usage: "its key, with --ca-cert"},
			&cli.StringFlag{Name: "admin-credentials", EnvVars: []string{"DEIS_ADMIN_CREDENTIALS"}, Value: etcdconn.UserCredentialsDir(), Usage: "where the administrator's credential is written"},
		),
		Action: func(c *cli.Context) error {
			log := logging.New(c, "coordinator")
			dataDir := c.String("data-dir")
			ca, created, err := access.LoadCA(dataDir, c.String("ca-cert"), c.String("ca-key"), true)
			if err != nil {
				return err
			}
			w := c.App.Writer
			if created {
				fmt.Fprintf(w, "Created the platform CA in %s (fingerprint %s).\n", access.PKIDir(dataDir), ca.Fingerprint())
			}
			caFile, err := access.CAFile(dataDir, ca)
			if err != nil {
				return err
			}
			for _, h := range c.StringSlice("etcd-host") {
				leaf, err := ca.IssuePeer("etcd", []string{h, "127.0.0.1", "localhost"}, 0)
				if err != nil {
					return err
				}
				cert, key, err := leaf.WriteFiles(access.PKIDir(dataDir), "etcd-"+h)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "etcd member %s: --cert-file %s --key-file %s --trusted-ca-file %s --client-cert-auth\n"+
					"  --peer-cert-file %s --peer-key-file %s --peer-trusted-ca-file %s --peer-client-cert-auth\n", h, cert, key, caFile, cert, key, caFile)
			}
			ec, err := etcdconn.FromContext(c).Resolve()
			if err != nil {
				return err
			}
			if len(ec.Endpoints) == 0 {
				return nil
			}
			rootCfg := ec
			if ec.Username == "" {
				if rootCfg, err = access.ClientConfig(dataDir, ca, "root", etcdauth.Root, ec); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(c.Context, 2*time.Minute)
			defer cancel()
			root, err := rootCfg.Dial(ctx)
			if err != nil {
				return fmt.Errorf("dial etcd as root (etcd must trust %s for client certificates, or give --etcd-user root and --etcd-password): %w", caFile, err)
			}
			defer root.Close()
			if err := access.Secure(ctx, root, ec.Prefix); err != nil {
				return err
			}
			fmt.Fprintf(w, "etcd at %s: auth on, coordinators' user and administrator made.\n", strings.Join(ec.Endpoints, ","))
			dir := c.String("admin-credentials")
			wrote, err := access.WriteAdmin(dir, ca, ec.Endpoints, ec.Prefix, created, log)
			if err != nil {
				return err
			}
			if wrote {
				fmt.Fprintf(w, "Wrote the administrator's credential to %s: deisctl uses it without flags.\n", dir)
			}
			return nil
		},
	}
}
