package jointoken

import (
	"context"
	"fmt"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
)

// Issuer is the coordinator's side of a join: it trades a token and a
// certificate request for the node's client certificate and etcd user.
type Issuer struct {
	// Tokens reads and redeems tokens (the coordinator's own etcd client).
	Tokens *Store
	CA     *pki.CA
	// Auth provisions the node's etcd user (etcd's root).
	Auth   etcdauth.Auth
	Prefix string
	// CertTTL is the node certificate's lifetime (0 means
	// pki.DefaultLeafTTL).
	CertTTL time.Duration
	// Options gives the node's roles from its claim; nil means a proxy
	// when its labels say role=proxy, and nothing more.
	Options func(Claim) etcdauth.NodeOptions
}

// Credentials are what a joined node gets: its certificate (for the key of
// its request, which never left it), the platform CA, and its etcd user.
type Credentials struct {
	Node     string
	Labels   map[string]string
	EtcdUser string
	CertPEM  []byte
	CAPEM    []byte
}

// Join checks the certificate request and the token (for node, when not
// empty), provisions the node's etcd user, redeems the token and signs the
// request with the node's identity. A bad request or token changes
// nothing; the token is used only once the node's etcd user exists.
func (i *Issuer) Join(ctx context.Context, token, node string, csrPEM []byte) (Credentials, error) {
	if _, err := pki.ParseCSR(csrPEM); err != nil {
		return Credentials{}, err
	}
	claim, err := i.Tokens.Peek(ctx, token, node)
	if err != nil {
		return Credentials{}, err
	}
	opts := etcdauth.NodeOptions{Proxy: state.LabelHas(claim.Labels, "role", "proxy")}
	if i.Options != nil {
		opts = i.Options(claim)
	}
	if err := etcdauth.EnsureNode(ctx, i.Auth, i.Prefix, claim.Node, opts); err != nil {
		return Credentials{}, fmt.Errorf("jointoken: provision node %s: %w", claim.Node, err)
	}
	if claim, err = i.Tokens.Redeem(ctx, token, node); err != nil {
		return Credentials{}, err
	}
	user := etcdauth.NewNames(i.Prefix).Node(claim.Node)
	leaf, err := i.CA.SignCSR(csrPEM, pki.Request{CommonName: user, Usage: pki.Client, TTL: i.CertTTL})
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Node: claim.Node, Labels: claim.Labels, EtcdUser: user, CertPEM: leaf.CertPEM, CAPEM: i.CA.CertPEM}, nil
}
