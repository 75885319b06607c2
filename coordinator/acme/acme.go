package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	xacme "golang.org/x/crypto/acme"
)

// AutoName is the name of a formation's automatic certificate.
const AutoName = state.AutoCertName

// Config configures a Manager.
type Config struct {
	Store   *state.Store
	Watcher clientv3.Watcher
	// Directory is the ACME directory URL.
	Directory string
	// Email is the account's contact (optional).
	Email string
	// HTTPClient talks to the ACME server (default: http.DefaultClient).
	HTTPClient *http.Client
	// BaseDomain makes each formation's default domain NAME.BaseDomain.
	BaseDomain string
	Logger     *slog.Logger
	// Resync is the longest the loop sleeps without a watch event
	// (default 10m): renewals are due by time, not by events.
	Resync time.Duration
	// Publish is the longest the manager waits for every live proxy of
	// the formation to serve new challenges before it asks the ACME server
	// to validate them (default 30s); it asks anyway after it.
	Publish time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Registerer takes the manager's metrics (optional; ignored with
	// Metrics).
	Registerer prometheus.Registerer
	// Metrics are the manager's metrics, registered by the caller
	// (NewMetrics) whether or not it runs a manager, so that the alert
	// rules always find them (default: new ones, registered with
	// Registerer).
	Metrics *Metrics
}

// Metrics are the ACME manager's metrics.
type Metrics struct {
	// Orders counts orders by result (issued, failed).
	Orders *prometheus.CounterVec
	// Failing is the number of formations whose last order failed: the
	// alert DeisACMEFailing fires while it stays above 0.
	Failing prometheus.Gauge
}

// NewMetrics makes the manager's metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Orders: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_acme_orders_total",
			Help: "Certificate orders for deisctl certs:auto, by result (issued, failed)."}, []string{"result"}),
		Failing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_acme_failing_formations",
			Help: "Formations with automatic certificates (deisctl certs:auto) whose last certificate order failed."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Orders, m.Failing} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("acme: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Manager keeps automatic certificates issued and renewed.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	client *xacme.Client
	failed map[string]failure // per formation
	m      *Metrics
	// next is when the last pass found the next renewal or retry due
	// (zero: none); Run wakes then, if before its resync.
	next time.Time
}

type failure struct {
	until time.Time
	n     int
}

// New checks cfg and returns a manager; it contacts no server.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Watcher == nil {
		return nil, errors.New("acme: no etcd store or watcher")
	}
	if !strings.HasPrefix(cfg.Directory, "https://") && !strings.HasPrefix(cfg.Directory, "http://") {
		return nil, fmt.Errorf("acme: directory %q is not a URL: pass --acme-directory https://acme-v02.api.letsencrypt.org/directory", cfg.Directory)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Publish <= 0 {
		cfg.Publish = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	metrics := cfg.Metrics
	if metrics == nil {
		var err error
		if metrics, err = NewMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return &Manager{cfg: cfg, log: cfg.Logger, failed: map[string]failure{}, m: metrics}, nil
}

// Run keeps certificates issued until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	k := m.cfg.Store.Keys
	wake := watch.NewWaker()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch.Prefixes(wctx, m.cfg.Watcher, 0, wake, k.Formations(), k.AllCerts())
	bo := backoff.Backoff{Min: time.Second, Max: m.cfg.Resync}
	timer := time.NewTimer(0) // the first pass at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-timer.C:
		}
		next := backoff.Jitter(m.cfg.Resync)
		if err := m.Pass(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("acme pass failed", "error", err)
			next = bo.Next()
		} else {
			bo.Reset()
			// A renewal or a retry due before the resync: wake for it.
			if !m.next.IsZero() {
				next = min(next, max(time.Until(m.next), time.Second))
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// account is the ACME account, kept at Keys.ACMEAccount.
type account struct {
	KeyPEM    string `json:"keyPEM"`
	Directory string `json:"directory"`
}

// ensureClient loads or creates the account key and registers it.
func (m *Manager) ensureClient(ctx context.Context) error {
	if m.client != nil {
		return nil
	}
	s := m.cfg.Store
	var acct account
	_, err := s.Get(ctx, s.Keys.ACMEAccount(), &acct)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	var key crypto.Signer
	if acct.KeyPEM != "" {
		if b, _ := pem.Decode([]byte(acct.KeyPEM)); b != nil {
			key, _ = x509.ParseECPrivateKey(b.Bytes)
		}
	}
	if key == nil || acct.Directory != m.cfg.Directory {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("acme: account key: %w", err)
		}
		der, _ := x509.MarshalECPrivateKey(k)
		acct = account{KeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), Directory: m.cfg.Directory}
		if err := s.Put(ctx, s.Keys.ACMEAccount(), acct); err != nil {
			return err
		}
		key = k
	}
	c := &xacme.Client{Key: key, DirectoryURL: m.cfg.Directory, HTTPClient: m.cfg.HTTPClient, UserAgent: "deis-coordinator"}
	var contact []string
	if m.cfg.Email != "" {
		contact = []string{"mailto:" + m.cfg.Email}
	}
	if _, err := c.Register(ctx, &xacme.Account{Contact: contact}, xacme.AcceptTOS); err != nil && !errors.Is(err, xacme.ErrAccountAlreadyExists) {
		return fmt.Errorf("acme: register with %s: %w", m.cfg.Directory, err)
	}
	m.client = c
	return nil
}

// renewAt is when a certificate is due for renewal: when less than a
// third of its lifetime is left.
func renewAt(c *state.Cert) time.Time {
	return c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 3)
}

// due tells whether formation f needs a new automatic certificate for
// domains, and why.
func due(cur *state.Cert, domains []string, now time.Time) (bool, string) {
	if cur == nil {
		return true, "no automatic certificate yet"
	}
	if _, not := state.Coverage(cur.Domains, domains); len(not) > 0 {
		return true, "domains not covered: " + strings.Join(not, ", ")
	}
	if !now.Before(renewAt(cur)) {
		return true, "less than a third of its lifetime left"
	}
	return false, ""
}

// Domains is what an automatic certificate of form covers: its default
// domain and added domains, without wildcards (HTTP-01 cannot prove them).
func Domains(form *state.Formation, base string) []string {
	ds := []string{form.Name + "." + base}
	for _, d := range form.Domains {
		if !strings.HasPrefix(d, "*.") {
			ds = append(ds, d)
		}
	}
	slices.Sort(ds)
	return slices.Compact(ds)
}

// Pass issues what is due.
func (m *Manager) Pass(ctx context.Context) error {
	s := m.cfg.Store
	forms, _, err := state.List[state.Formation](ctx, s.KV, s.Keys.Formations())
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	m.next = time.Time{}
	soonest := func(t time.Time) {
		if m.next.IsZero() || t.Before(m.next) {
			m.next = t
		}
	}
	auto := map[string]bool{}
	defer func() {
		for f := range m.failed {
			if !auto[f] {
				delete(m.failed, f) // turned off or destroyed: nothing fails
			}
		}
		m.m.Failing.Set(float64(len(m.failed)))
	}()
	for _, e := range forms {
		form := e.Value
		if form.HTTPS == nil || !form.HTTPS.Auto {
			continue
		}
		auto[form.Name] = true
		if f, ok := m.failed[form.Name]; ok && now.Before(f.until) {
			soonest(f.until)
			continue
		}
		var cur state.Cert
		var curp *state.Cert
		if _, err := s.Get(ctx, s.Keys.Cert(form.Name, AutoName), &cur); err == nil {
			curp = &cur
		} else if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		domains := Domains(&form, m.cfg.BaseDomain)
		ok, why := due(curp, domains, now)
		if !ok {
			soonest(renewAt(curp))
			continue
		}
		m.log.Info("ordering a certificate", "formation", form.Name, "domains", domains, "reason", why)
		// An ACME server that cannot be reached fails the order like one
		// that refuses it: retried on the formation's schedule, and counted.
		err := m.ensureClient(ctx)
		if err == nil {
			err = m.issue(ctx, form.Name, domains)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			f := m.failed[form.Name]
			f.n++
			f.until = now.Add(min(time.Duration(1<<min(f.n-1, 12))*15*time.Second, time.Hour))
			m.failed[form.Name] = f
			// Retried on its own schedule, not by the loop's backoff.
			m.log.Warn("certificate order failed", "formation", form.Name, "error", err, "retry", f.until)
			m.m.Orders.WithLabelValues("failed").Inc()
			soonest(f.until)
			m.report(ctx, form.Name, state.ACMEStatus{Error: err.Error(), Retry: f.until.UTC(), At: now.UTC()})
			continue
		}
		delete(m.failed, form.Name)
		m.m.Orders.WithLabelValues("issued").Inc()
		m.report(ctx, form.Name, state.ACMEStatus{At: now.UTC()})
	}
	return nil
}

// issue orders, validates and stores a certificate for domains.
func (m *Manager) issue(ctx context.Context, f string, domains []string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c := m.client
	s := m.cfg.Store
	order, err := c.AuthorizeOrder(ctx, xacme.DomainIDs(domains...))
	if err != nil {
		return fmt.Errorf("acme: order: %w", err)
	}
	var published []string
	defer func() {
		for _, key := range published {
			_, _ = s.KV.Txn(context.WithoutCancel(ctx)).Then(clientv3.OpDelete(key)).Commit()
		}
	}()
	var accept []*xacme.Challenge
	var served []state.ACMEChallenge
	for _, u := range order.AuthzURLs {
		z, err := c.GetAuthorization(ctx, u)
		if err != nil {
			return fmt.Errorf("acme: authorization: %w", err)
		}
		if z.Status == xacme.StatusValid {
			continue
		}
		var ch *xacme.Challenge
		for _, x := range z.Challenges {
			if x.Type == "http-01" {
				ch = x
			}
		}
		if ch == nil {
			return fmt.Errorf("acme: the server offers no http-01 challenge for %s", z.Identifier.Value)
		}
		if err := state.ValidateACMEToken(ch.Token); err != nil {
			return fmt.Errorf("acme: %w", err)
		}
		ka, err := c.HTTP01ChallengeResponse(ch.Token)
		if err != nil {
			return fmt.Errorf("acme: %w", err)
		}
		key := s.Keys.ACMEChallenge(f, ch.Token)
		ok, err := s.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), ">", 0)},
			clientv3.OpPut(key, state.Marshal(state.ACMEChallenge{Domain: z.Identifier.Value, Token: ch.Token, KeyAuth: ka})))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("acme: formation %s was destroyed", f)
		}
		published = append(published, key)
		accept = append(accept, ch)
		served = append(served, state.ACMEChallenge{Domain: z.Identifier.Value, Token: ch.Token, KeyAuth: ka})
	}
	if len(accept) > 0 {
		if err := m.waitServed(ctx, f, served); err != nil {
			return err
		}
	}
	for _, ch := range accept {
		if _, err := c.Accept(ctx, ch); err != nil {
			return fmt.Errorf("acme: accept challenge: %w", err)
		}
	}
	for _, u := range order.AuthzURLs {
		if _, err := c.WaitAuthorization(ctx, u); err != nil {
			return fmt.Errorf("acme: validation: %w", err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("acme: key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: domains[0]}, DNSNames: domains}, key)
	if err != nil {
		return fmt.Errorf("acme: CSR: %w", err)
	}
	ready, err := c.WaitOrder(ctx, order.URI)
	if err != nil {
		return fmt.Errorf("acme: order: %w", err)
	}
	if ready.URI == "" {
		ready.URI = order.URI
	}
	if ready.FinalizeURL == "" {
		ready.FinalizeURL = order.FinalizeURL
	}
	// With the order's URL: a server need not name it when it answers
	// the finalize request (pebble does not).
	ders, _, err := c.CreateCertFromOrder(ctx, ready, csr, true)
	if err != nil {
		return fmt.Errorf("acme: finalize: %w", err)
	}
	var chain []byte
	for _, d := range ders {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	cert, err := state.ParseCert(chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), m.cfg.Now())
	if err != nil {
		return fmt.Errorf("acme: the issued certificate: %w", err)
	}
	cert.Name, cert.Formation, cert.Auto, cert.Added = AutoName, f, true, m.cfg.Now().UTC()
	ok, err := s.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), ">", 0)},
		clientv3.OpPut(s.Keys.Cert(f, AutoName), state.Marshal(cert)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("acme: formation %s was destroyed", f)
	}
	m.log.Info("certificate issued", "formation", f, "domains", cert.Domains, "expires", cert.NotAfter)
	return nil
}

// report records how formation f's last order went, while f exists.
func (m *Manager) report(ctx context.Context, f string, st state.ACMEStatus) {
	s := m.cfg.Store
	_, err := s.Commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Keys.Formation(f)), ">", 0)},
		clientv3.OpPut(s.Keys.ACMEStatus(f), state.Marshal(st)))
	if err != nil {
		m.log.Warn("cannot record the certificate order status", "formation", f, "error", err)
	}
}

// waitServed waits until every live proxy node of formation f answers each
// challenge, or Publish passes (then the ACME server is asked anyway: a
// proxy this coordinator cannot reach may still be reachable from it).
func (m *Manager) waitServed(ctx context.Context, f string, chs []state.ACMEChallenge) error {
	s := m.cfg.Store
	k := s.Keys
	nodes, _, err := state.List[state.Node](ctx, s.KV, k.Nodes())
	if err != nil {
		return err
	}
	layers, _, err := state.List[state.Layer](ctx, s.KV, k.Layers(f))
	if err != nil {
		return err
	}
	var proxies []string
	for _, n := range nodes {
		node := n.Value
		if node.HTTPPort == 0 || node.Addr == "" {
			continue
		}
		if resp, err := s.KV.Get(ctx, k.Heartbeat(node.Name), clientv3.WithCountOnly()); err != nil || resp.Count == 0 {
			continue // not live
		}
		for i := range layers {
			if l := &layers[i].Value; l.Type == state.LayerProxy && l.Matches(&node) {
				proxies = append(proxies, net.JoinHostPort(node.Addr, strconv.Itoa(node.HTTPPort)))
				break
			}
		}
	}
	hc := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	answers := func(addr string, ch state.ACMEChallenge) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/.well-known/acme-challenge/"+ch.Token, nil)
		if err != nil {
			return false
		}
		req.Host = ch.Domain
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == ch.KeyAuth
	}
	deadline := time.Now().Add(m.cfg.Publish)
	for {
		missing := ""
		for _, p := range proxies {
			for _, ch := range chs {
				if missing == "" && !answers(p, ch) {
					missing = p + " for " + ch.Domain
				}
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			m.log.Warn("a proxy does not answer the ACME challenge; asking for validation anyway", "formation", f, "proxy", missing)
			return nil
		}
		if err := backoff.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}
