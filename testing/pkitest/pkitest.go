package pkitest

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/pki"
)

// CA is a test's platform CA.
type CA struct {
	*pki.CA
	Verifier *pki.Verifier
	t        testing.TB
}

// New creates a CA in a temporary directory.
func New(t testing.TB) *CA {
	t.Helper()
	ca, err := pki.Create(filepath.Join(t.TempDir(), "pki"), "deis test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca, Verifier: &pki.Verifier{CA: ca}, t: t}
}

// Leaf issues a certificate for identity with usage, for 127.0.0.1 and
// localhost when it serves.
func (c *CA) Leaf(identity string, usage pki.Usage) *pki.Leaf {
	c.t.Helper()
	r := pki.Request{CommonName: identity, Usage: usage, TTL: time.Hour}
	if usage&pki.Server != 0 {
		r.DNSNames, r.IPs = pki.SplitHosts([]string{"127.0.0.1", "localhost"})
	}
	l, err := c.Issue(r)
	if err != nil {
		c.t.Fatal(err)
	}
	return l
}

// ServerTLS serves as identity (a peer certificate, as nodes have) and
// requires client certificates of this CA.
func (c *CA) ServerTLS(identity string) *tls.Config {
	c.t.Helper()
	return pki.ServerTLS(c.Verifier, c.Leaf(identity, pki.Peer))
}

// ClientTLS trusts this CA and presents a client certificate of identity
// ("" presents none).
func (c *CA) ClientTLS(identity string) *tls.Config {
	c.t.Helper()
	if identity == "" {
		return pki.ClientTLS(c.Verifier, nil)
	}
	return pki.ClientTLS(c.Verifier, c.Leaf(identity, pki.Client))
}

// Foreign trusts this CA (so the server is accepted) but presents a client
// certificate for identity issued by another CA.
func (c *CA) Foreign(identity string) *tls.Config {
	c.t.Helper()
	other := New(c.t)
	return pki.ClientTLS(c.Verifier, other.Leaf(identity, pki.Client))
}

// HTTPClient is a client over cfg.
func HTTPClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// NodeClientTLS dials node's agent API (prefix's names) as identity
// ("" presents no certificate), accepting only node's certificate.
func (c *CA) NodeClientTLS(identity, prefix, node string) *tls.Config {
	c.t.Helper()
	var leaf *pki.Leaf
	if identity != "" {
		leaf = c.Leaf(identity, pki.Client)
	}
	return access.IdentityTLS(c.Verifier, leaf, etcdauth.NewNames(prefix).Node(node))
}

// ForeignNodeClientTLS is NodeClientTLS with a certificate of another CA.
func (c *CA) ForeignNodeClientTLS(identity, prefix, node string) *tls.Config {
	c.t.Helper()
	return access.IdentityTLS(c.Verifier, New(c.t).Leaf(identity, pki.Client), etcdauth.NewNames(prefix).Node(node))
}

// NodeServerTLS serves as node's agent API does: with the node's client
// certificate from its join, requiring client certificates of this CA.
func (c *CA) NodeServerTLS(prefix, node string) *tls.Config {
	c.t.Helper()
	return pki.ServerTLS(c.Verifier, c.Leaf(etcdauth.NewNames(prefix).Node(node), pki.Client))
}
