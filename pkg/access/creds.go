package access

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/pki"
)

// Creds is one identity's certificate and the platform CA it trusts, as a
// credentials directory holds them (ca.crt, client.crt, client.key).
type Creds struct {
	Verifier *pki.Verifier
	Leaf     *pki.Leaf
}

// LoadCreds reads the CA certificate and the certificate and key of an
// identity. Errors name the file and the fix.
func LoadCreds(caFile, certFile, keyFile string) (*Creds, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("access: no credentials: give the platform CA, a certificate and its key (a credentials directory: --credentials DIR, or DEIS_CREDENTIALS)")
	}
	ca, err := LoadCACert(caFile)
	if err != nil {
		return nil, err
	}
	leaf, err := pki.LoadLeaf(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("access: certificate %s: %w", certFile, err)
	}
	return &Creds{Verifier: &pki.Verifier{CA: ca}, Leaf: leaf}, nil
}

// LoadCACert reads the platform CA's certificate (not its key): enough to
// verify what it issued.
func LoadCACert(path string) (*pki.CA, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("access: read the platform CA: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("access: %s holds no PEM certificate: give the platform CA's ca.crt", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("access: parse the platform CA %s: %w", path, err)
	}
	if !c.IsCA {
		return nil, fmt.Errorf("access: %s is not a CA certificate: give the platform CA's ca.crt", path)
	}
	return &pki.CA{Cert: c, CertPEM: pem.EncodeToMemory(blk)}, nil
}

// Identity is the certificate's Common Name (its etcd user).
func (c *Creds) Identity() string { return c.Leaf.Cert.Subject.CommonName }

// ClientTLS dials the platform's servers presenting the certificate.
func (c *Creds) ClientTLS() *tls.Config { return pki.ClientTLS(c.Verifier, c.Leaf) }

// ServerTLS serves with the certificate (it needs the server usage: a node's
// has both) and requires client certificates of the CA.
func (c *Creds) ServerTLS() *tls.Config { return pki.ServerTLS(c.Verifier, c.Leaf) }

// NodeTLS dials node's agent API presenting this certificate. The agent
// serves with the certificate it got when it joined, and that is what is
// checked: issued by the platform CA, valid, not revoked, and named
// node's identity (Names.Node) — its Common Name, not a host name, so no
// host name needs to be in it, and no other node can pose as this one.
func (c *Creds) NodeTLS(prefix, node string) *tls.Config {
	return IdentityTLS(c.Verifier, c.Leaf, etcdauth.NewNames(prefix).Node(node))
}

// IdentityTLS is a client config that presents cert (nil: none) and accepts
// only a server whose certificate of v's CA names want.
func IdentityTLS(v *pki.Verifier, cert *pki.Leaf, want string) *tls.Config {
	t := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below: the chain against the platform CA, then the name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// A node's certificate has the client usage (from its join).
			who, err := v.Verify(cs.PeerCertificates, pki.Client, "")
			if err != nil {
				return err
			}
			if who != want {
				return fmt.Errorf("access: the server presented the certificate of %q, not of %q: check the address it advertises", who, want)
			}
			return nil
		},
	}
	if cert != nil {
		t.Certificates = []tls.Certificate{cert.TLSCertificate()}
	}
	return t
}
