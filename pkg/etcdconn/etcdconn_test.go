package etcdconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

const rootPassword = "s3cret-root"

// tlsFiles are the PEM files of a test PKI.
type tlsFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// writePKI creates a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
func writePKI(t *testing.T, dir string) tlsFiles {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(0)
	tmpl := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
		}
	}
	writePEM := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(name, "EC PRIVATE KEY", der)
	}

	caKey := newKey()
	caTmpl := tmpl("deis test CA")
	caTmpl.IsCA = true
	caTmpl.BasicConstraintsValid = true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}

	leaf := func(cn string, usage []x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		c := tmpl(cn)
		c.KeyUsage = x509.KeyUsageDigitalSignature
		c.ExtKeyUsage = usage
		c.IPAddresses = ips
		der, err := x509.CreateCertificate(rand.Reader, c, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	// etcd's own gateway dials the server with the server certificate, so it
	// must be good for client auth too.
	srvDER, srvKey := leaf("127.0.0.1",
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		[]net.IP{net.IPv4(127, 0, 0, 1)})
	// The CN is not an etcd user, so the certificate alone grants nothing
	// once auth is on: the password is what authenticates.
	cliDER, cliKey := leaf("deis-test-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)

	return tlsFiles{
		CA:         writePEM("ca.pem", "CERTIFICATE", caDER),
		ServerCert: writePEM("server.pem", "CERTIFICATE", srvDER),
		ServerKey:  writeKey("server-key.pem", srvKey),
		ClientCert: writePEM("client.pem", "CERTIFICATE", cliDER),
		ClientKey:  writeKey("client-key.pem", cliKey),
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSecureEtcd runs an etcd that serves clients over TLS with client
// certificate auth and has etcd authentication enabled (user root with
// rootPassword). It returns the https client URL and the PKI files.
func startSecureEtcd(t *testing.T) (string, tlsFiles) {
	t.Helper()
	pki := writePKI(t, t.TempDir())
	cu := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	pu := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cURL, _ := url.Parse(cu)
	pURL, _ := url.Parse(pu)

	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "etcdconn-test"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cURL}, []url.URL{*cURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pURL}, []url.URL{*pURL}
	cfg.InitialCluster = cfg.Name + "=" + pu
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       pki.ServerCert,
		KeyFile:        pki.ServerKey,
		TrustedCAFile:  pki.CA,
		ClientCertAuth: true,
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready after 60s")
	}

	// Set up auth with a certificate-only client while auth is still off.
	tlsCfg, err := transport.TLSInfo{CertFile: pki.ClientCert, KeyFile: pki.ClientKey, TrustedCAFile: pki.CA}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.UserAdd(ctx, "root", rootPassword); err != nil {
		t.Fatalf("user add: %v", err)
	}
	if _, err := c.RoleAdd(ctx, "root"); err != nil {
		t.Fatalf("role add: %v", err)
	}
	if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatalf("grant role: %v", err)
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		t.Fatalf("auth enable: %v", err)
	}
	return cu, pki
}

// fromApp runs a cli.App with the shared flags and returns what FromContext
// read.
func fromApp(t *testing.T, args ...string) Config {
	t.Helper()
	var got Config
	app := &cli.App{
		Name:   "test",
		Flags:  Flags(),
		Writer: io.Discard, ErrWriter: io.Discard,
		Action: func(c *cli.Context) error {
			got = FromContext(c)
			return nil
		},
	}
	if err := app.Run(append([]string{"test"}, args...)); err != nil {
		t.Fatalf("app run: %v", err)
	}
	return got
}

func TestFromContextDefaults(t *testing.T) {
	for _, k := range []string{"DEIS_ETCD_ENDPOINTS", "DEIS_ETCD_CACERT", "DEIS_ETCD_CERT", "DEIS_ETCD_KEY", "DEIS_ETCD_USER", "DEIS_ETCD_PASSWORD", "DEIS_PREFIX"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	got := fromApp(t)
	want := Config{Prefix: "/deis"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults = %+v, want %+v", got, want)
	}
}

func TestFromContextSplitsEndpoints(t *testing.T) {
	t.Setenv("DEIS_ETCD_ENDPOINTS", "")
	os.Unsetenv("DEIS_ETCD_ENDPOINTS")
	want := []string{"https://a:2379", "https://b:2379", "https://c:2379"}
	for name, args := range map[string][]string{
		"one flag with commas": {"--etcd-endpoints", "https://a:2379, https://b:2379,,https://c:2379"},
		"repeated flag":        {"--etcd-endpoints", "https://a:2379", "--etcd-endpoints", "https://b:2379,https://c:2379"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := fromApp(t, args...).Endpoints; !reflect.DeepEqual(got, want) {
				t.Fatalf("endpoints = %q, want %q", got, want)
			}
		})
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("DEIS_ETCD_ENDPOINTS", "https://a:2379,https://b:2379, https://c:2379")
		if got := fromApp(t).Endpoints; !reflect.DeepEqual(got, want) {
			t.Fatalf("endpoints = %q, want %q", got, want)
		}
	})
}

// TestSecureEtcd dials a TLS + client-cert + password-protected etcd.
func TestSecureEtcd(t *testing.T) {
	cu, pki := startSecureEtcd(t)
	good := Config{
		Endpoints: []string{cu},
		CAFile:    pki.CA,
		CertFile:  pki.ClientCert,
		KeyFile:   pki.ClientKey,
		Username:  "root",
		Password:  rootPassword,
		Prefix:    "/deis",
	}

	putGet := func(t *testing.T, cfg Config, key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := cfg.Dial(ctx)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		if _, err := c.Put(ctx, key, "v-"+key); err != nil {
			t.Fatalf("put: %v", err)
		}
		r, err := c.Get(ctx, key)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v-"+key {
			t.Fatalf("get %s = %v, want v-%s", key, r.Kvs, key)
		}
	}

	dialFails := func(t *testing.T, cfg Config, wants ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := cfg.Dial(ctx)
		if err == nil {
			c.Close()
			t.Fatal("dial succeeded, want an error")
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}

	t.Run("dial", func(t *testing.T) { putGet(t, good, "/deis/test/dial") })

	t.Run("wrong password", func(t *testing.T) {
		bad := good
		bad.Password = "wrong"
		dialFails(t, bad, "etcdconn:", cu, "authentication failed")
	})

	t.Run("no password", func(t *testing.T) {
		// The client certificate's CN is no etcd user, so without the
		// password nothing may be read.
		bad := good
		bad.Username, bad.Password = "", ""
		dialFails(t, bad, "etcdconn:", cu)
	})

	t.Run("no CA file", func(t *testing.T) {
		bad := good
		bad.CAFile = ""
		dialFails(t, bad, "etcdconn:", cu, "unknown authority")
	})

	t.Run("flags", func(t *testing.T) {
		for _, k := range []string{"DEIS_ETCD_ENDPOINTS", "DEIS_ETCD_CACERT", "DEIS_ETCD_CERT", "DEIS_ETCD_KEY", "DEIS_ETCD_USER", "DEIS_ETCD_PASSWORD", "DEIS_PREFIX"} {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
		cfg := fromApp(t,
			"--etcd-endpoints", cu+",https://127.0.0.1:1",
			"--etcd-cacert", pki.CA,
			"--etcd-cert", pki.ClientCert,
			"--etcd-key", pki.ClientKey,
			"--etcd-user", "root",
			"--etcd-password", rootPassword,
			"--prefix", "/flags",
		)
		want := good
		want.Endpoints = []string{cu, "https://127.0.0.1:1"}
		want.Prefix = "/flags"
		want.prefixSet = true
		if !reflect.DeepEqual(cfg, want) {
			t.Fatalf("FromContext = %+v, want %+v", cfg, want)
		}
		cfg.Endpoints = cfg.Endpoints[:1] // the second one is only there to test splitting
		putGet(t, cfg, "/flags/test")
	})

	t.Run("env", func(t *testing.T) {
		t.Setenv("DEIS_ETCD_ENDPOINTS", cu)
		t.Setenv("DEIS_ETCD_CACERT", pki.CA)
		t.Setenv("DEIS_ETCD_CERT", pki.ClientCert)
		t.Setenv("DEIS_ETCD_KEY", pki.ClientKey)
		t.Setenv("DEIS_ETCD_USER", "root")
		t.Setenv("DEIS_ETCD_PASSWORD", rootPassword)
		t.Setenv("DEIS_PREFIX", "/env")
		cfg := fromApp(t)
		want := good
		want.Prefix = "/env"
		want.prefixSet = true
		if !reflect.DeepEqual(cfg, want) {
			t.Fatalf("FromContext = %+v, want %+v", cfg, want)
		}
		putGet(t, cfg, "/env/test")
	})
}
