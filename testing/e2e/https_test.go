package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/testing/certtest"
	"github.com/deis/deis/testing/harness"
)

// pebbleVersion is the ACME test server the HTTPS test runs.
const pebbleVersion = "v2.10.3"

// pebbleBinaries builds pebble and pebble-challtestsrv once into the user's
// cache directory (from the Go module proxy) and returns that directory.
func pebbleBinaries(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "deis-test", "pebble-"+pebbleVersion)
	if _, err := os.Stat(filepath.Join(dir, "pebble-challtestsrv")); err == nil {
		return dir
	}
	cmd := exec.Command("go", "install",
		"github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion,
		"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@"+pebbleVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pebble %s (needs the Go module proxy once): %v\n%s", pebbleVersion, err, out)
	}
	return dir
}

// startPebble runs pebble on port, validating HTTP-01 on httpPort of every
// name, which its DNS server (pebble-challtestsrv) resolves to 127.0.0.1.
// The certificates it issues are valid for validity.
func startPebble(t *testing.T, bin, dir string, ca *certtest.CA, port, httpPort int, validity time.Duration) {
	t.Helper()
	crt, key := ca.Files(t, dir, "localhost")
	dns := harness.FreePort(t, "127.0.0.1")
	cfg := fmt.Sprintf(`{"pebble": {"listenAddress": "127.0.0.1:%d", "managementListenAddress": "127.0.0.1:%d",
		"certificate": %q, "privateKey": %q, "httpPort": %d, "tlsPort": %d, "ocspResponderURL": "",
		"externalAccountBindingRequired": false, "retryAfter": {"authz": 1, "order": 1},
		"profiles": {"default": {"description": "the test's", "validityPeriod": %d}}}}`,
		port, harness.FreePort(t, "127.0.0.1"), crt, key, httpPort, harness.FreePort(t, "127.0.0.1"), int(validity.Seconds()))
	cfgPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, nil, filepath.Join(bin, "pebble-challtestsrv"), "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dns),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, "127.0.0.1")))
	run(t, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		filepath.Join(bin, "pebble"), "-config", cfgPath, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dns))
}

// run starts a helper process that lives until the test ends; its output
// is logged when the test fails.
func run(t *testing.T, env []string, name string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("---- %s ----\n%s", filepath.Base(name), out.String())
		}
	})
}

// httpsClient reaches the proxy's HTTPS port whatever the URL's host, and
// trusts pool; it does not follow redirects.
func httpsClient(addr string, port int, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", addr, port))
		}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// servedIssuer is the issuer of the certificate the proxy serves for name.
func servedIssuer(addr string, port int, name string) (string, error) {
	c, err := servedCert(addr, port, name)
	if err != nil {
		return "", err
	}
	return c.Issuer.CommonName, nil
}

// servedCert is the certificate the proxy serves for name.
func servedCert(addr string, port int, name string) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("%s:%d", addr, port),
		&tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// metric is the value of the sample line "name value" (name with its
// labels, as exposed) at http://addr/metrics; -1 if there is none.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestHTTPS: a certificate added with deisctl is served by SNI and routes
// to the app, plain HTTP redirects when asked, and with certs:auto the
// coordinator gets a certificate from a real ACME server (pebble), whose
// HTTP-01 validation reaches the proxy. Pebble's certificates live a
// minute here, so the automatic one is soon due for renewal: the
// coordinator renews it, and the proxy serves the new one without a
// reload.
func TestHTTPS(t *testing.T) {
	bin := pebbleBinaries(t)
	dir := t.TempDir()
	ca := certtest.NewCA(t, "deis e2e CA")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	acmePort := harness.FreePort(t, "127.0.0.1")
	p := harness.NewPlatformWith(t, harness.PlatformOptions{CoordinatorArgs: []string{
		"--acme-directory", fmt.Sprintf("https://localhost:%d/dir", acmePort), "--acme-ca", caFile}})
	a := p.StartAgent("tls", harness.AgentOptions{})
	startPebble(t, bin, dir, ca, acmePort, a.HTTPPort, time.Minute)
	repo, _ := deploy(t, p, "tls")
	host := "tls.localhost"
	p.WaitApp(a, host, "hello from tls (v1)", 3*time.Minute)

	// A manual certificate.
	crt, key := ca.Files(t, dir, host)
	out := p.MustCtl(repo, "certs:add", crt, key)
	if !strings.Contains(out, "Covered: tls.localhost") {
		t.Fatalf("certs:add:\n%s", out)
	}
	c := httpsClient(a.Addr, a.HTTPSPort, ca.Pool())
	harness.Eventually(t, 30*time.Second, "the app over HTTPS with the added certificate", func() (bool, string) {
		resp, err := c.Get("https://" + host + "/")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), "hello from tls"), fmt.Sprintf("%d %s", resp.StatusCode, b)
	})

	// Redirect.
	p.MustCtl(repo, "certs:redirect", "on")
	plain := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	harness.Eventually(t, 30*time.Second, "plain HTTP to redirect", func() (bool, string) {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s:%d/x", a.Addr, a.HTTPPort), nil)
		req.Host = host
		resp, err := plain.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		want := fmt.Sprintf("https://%s:%d/x", host, a.HTTPSPort)
		return resp.StatusCode == 308 && resp.Header.Get("Location") == want, fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Location"))
	})

	// Automatic certificates from pebble, validated through the proxy.
	p.MustCtl(repo, "certs:remove", host)
	p.MustCtl(repo, "certs:auto", "on")
	harness.Eventually(t, 90*time.Second, "a certificate issued by pebble served", func() (bool, string) {
		iss, err := servedIssuer(a.Addr, a.HTTPSPort, host)
		return err == nil && strings.Contains(strings.ToLower(iss), "pebble"), fmt.Sprintf("issuer %q %v", iss, err)
	})
	out = p.MustCtl(repo, "certs")
	if !strings.Contains(out, "auto") || !strings.Contains(out, "tls.localhost") {
		t.Errorf("certs:\n%s", out)
	}

	// Renewal: due once less than a third of the minute is left.
	first, err := servedCert(a.Addr, a.HTTPSPort, host)
	if err != nil {
		t.Fatal(err)
	}
	reloads := metric(t, a.MetricsAddr, "deis_proxy_reloads_total")
	harness.Eventually(t, 2*time.Minute, "the automatic certificate renewed and served", func() (bool, string) {
		c, err := servedCert(a.Addr, a.HTTPSPort, host)
		if err != nil {
			return false, err.Error()
		}
		return c.SerialNumber.Cmp(first.SerialNumber) != 0 && c.NotAfter.After(first.NotAfter),
			fmt.Sprintf("serving serial %x until %s (the first: %x until %s)", c.SerialNumber, c.NotAfter, first.SerialNumber, first.NotAfter)
	})
	renewed, _ := servedCert(a.Addr, a.HTTPSPort, host)
	t.Logf("renewed %v before the first certificate expired (it lived %v)", first.NotAfter.Sub(renewed.NotBefore).Round(time.Second),
		first.NotAfter.Sub(first.NotBefore).Round(time.Second))
	if after := metric(t, a.MetricsAddr, "deis_proxy_reloads_total"); after != reloads {
		t.Errorf("deis_proxy_reloads_total went from %v to %v during the renewal: certificates must change without a reload", reloads, after)
	}
	coord := fmt.Sprintf("127.0.0.1:%d", p.HTTPPort)
	if v := metric(t, coord, `deis_acme_orders_total{result="issued"}`); v < 2 {
		t.Errorf(`deis_acme_orders_total{result="issued"} = %v after a renewal, want 2 or more`, v)
	}
	if v := metric(t, coord, "deis_acme_failing_formations"); v != 0 {
		t.Errorf("deis_acme_failing_formations = %v, want 0", v)
	}
}
