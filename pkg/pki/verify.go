package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// DefaultFetchHint is how an operator gets the platform CA; errors about a
// certificate from another CA end with it.
const DefaultFetchHint = "fetch the platform CA (ca.crt in the coordinator's data directory, DATA_DIR/pki/ca.crt) and use a certificate issued by it"

// Sentinel errors a verifier wraps, for errors.Is.
var (
	ErrForeignCA  = errors.New("certificate from another CA")
	ErrExpired    = errors.New("certificate expired or not yet valid")
	ErrRevoked    = errors.New("certificate revoked")
	ErrWrongUsage = errors.New("certificate not made for this use")
	ErrWrongHost  = errors.New("certificate not made for this host")
	ErrNoCert     = errors.New("no certificate")
)

// Verifier checks certificates against the platform CA and the revoked
// serials.
type Verifier struct {
	CA      *CA
	Revoked *Revoked // nil revokes nothing
	// Now is the clock (nil means time.Now).
	Now func() time.Time
	// FetchHint ends errors about certificates from another CA ("" means
	// DefaultFetchHint).
	FetchHint string
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) hint() string {
	if v.FetchHint != "" {
		return v.FetchHint
	}
	return DefaultFetchHint
}

// Verify checks chain (leaf first, as a TLS peer sends it) for usage:
// issued by the platform CA, valid now, made for usage, not revoked, and
// for host when host is not empty. It returns the leaf's identity (its
// Common Name). Every error names what is wrong and the fix.
func (v *Verifier) Verify(chain []*x509.Certificate, usage Usage, host string) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("pki: no %s certificate was presented: give one issued by the platform CA: %w", usage, ErrNoCert)
	}
	leaf := chain[0]
	who := leaf.Subject.CommonName
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	now := v.now()
	opts := x509.VerifyOptions{Roots: v.CA.Pool(), Intermediates: inter, CurrentTime: now, KeyUsages: usage.extKeyUsages()}
	if _, err := leaf.Verify(opts); err != nil {
		var ua x509.UnknownAuthorityError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return "", fmt.Errorf("pki: certificate of %q is from another CA (issuer %q, not the platform CA %q): %s: %w", who, leaf.Issuer.CommonName, v.CA.Cert.Subject.CommonName, v.hint(), ErrForeignCA)
		case errors.As(err, &ci) && ci.Reason == x509.Expired:
			if now.Before(leaf.NotBefore) {
				return "", fmt.Errorf("pki: certificate of %q is not valid before %s (is this machine's clock right?): %w", who, leaf.NotBefore.UTC().Format(time.RFC3339), ErrExpired)
			}
			return "", fmt.Errorf("pki: certificate of %q expired at %s: issue a new one from the platform CA: %w", who, leaf.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
		case errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage:
			return "", fmt.Errorf("pki: certificate of %q is not a %s certificate: issue one with the %s usage: %w", who, usage, usage, ErrWrongUsage)
		}
		return "", fmt.Errorf("pki: certificate of %q does not verify against the platform CA: %v: %s: %w", who, err, v.hint(), ErrForeignCA)
	}
	if v.Revoked.Has(leaf.SerialNumber) {
		return "", fmt.Errorf("pki: certificate of %q (serial %s) was revoked: ask an administrator for new credentials: %w", who, leaf.SerialNumber.Text(16), ErrRevoked)
	}
	if host != "" {
		if err := leaf.VerifyHostname(host); err != nil {
			return "", fmt.Errorf("pki: server certificate of %q is for %s, not %q: issue it with that host name or IP address: %w", who, names(leaf), host, ErrWrongHost)
		}
	}
	return who, nil
}

func names(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 {
		return "no host"
	}
	return strings.Join(n, ", ")
}

// ServerTLS is the tls.Config of a server presenting cert that requires a
// client certificate of the platform CA, valid, with the client usage and
// not revoked, on every handshake. A handler finds the caller's identity with
// PeerIdentity.
func ServerTLS(v *Verifier, cert *Leaf) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain includes the CA, so a joining node that pins its
		// fingerprint (PinnedTLS) can check this server before it has the CA.
		Certificates: []tls.Certificate{withCA(cert.TLSCertificate(), v.CA)},
		// The checks are ours (VerifyConnection), so that the refusal logged
		// names the cause and the fix. No ClientCAs list: with one, a Go
		// client holding only a foreign certificate sends none, and the log
		// could not say that it came from another CA.
		ClientAuth: tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := v.Verify(cs.PeerCertificates, Client, "")
			return err
		},
	}
}

// ClientTLS is the tls.Config of a client that trusts only servers with a
// certificate of the platform CA (valid, server usage, for the host dialled,
// and not revoked) and presents cert (nil for none). Go checks the chain and
// the host name (which a VerifyConnection of its own could not see for an IP
// address); pass the errors of a dial through Explain to get one that names
// the fix.
func ClientTLS(v *Verifier, cert *Leaf) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    v.CA.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 && v.Revoked.Has(cs.PeerCertificates[0].SerialNumber) {
				leaf := cs.PeerCertificates[0]
				return fmt.Errorf("pki: server certificate of %q (serial %s) was revoked: the server needs a new one: %w", leaf.Subject.CommonName, leaf.SerialNumber.Text(16), ErrRevoked)
			}
			return nil
		},
	}
	if cert != nil {
		c.Certificates = []tls.Certificate{cert.TLSCertificate()}
	}
	return c
}

func withCA(c tls.Certificate, ca *CA) tls.Certificate {
	c.Certificate = append(c.Certificate, ca.Cert.Raw)
	return c
}

// PinnedTLS is the tls.Config of a client that does not have the platform
// CA yet (a node joining): it accepts a server whose chain holds a CA with
// fingerprint (CA.Fingerprint, as printed next to the join token) and whose
// certificate that CA issued for host.
func PinnedTLS(fingerprint, host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		// Verified below against the pinned CA, not the system's roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("pki: the server sent no certificate: %w", ErrNoCert)
			}
			var ca *x509.Certificate
			for _, c := range cs.PeerCertificates[1:] {
				if Fingerprint(c) == fingerprint {
					ca = c
				}
			}
			if ca == nil {
				return fmt.Errorf("pki: the server at %s does not present the CA %s: check the address and the fingerprint printed with the join token: %w", host, fingerprint, ErrForeignCA)
			}
			v := &Verifier{CA: &CA{Cert: ca}}
			_, err := v.Verify(cs.PeerCertificates[:1], Server, host)
			return err
		},
	}
}

// PeerIdentity is the identity of a client that a ServerTLS server
// accepted (its certificate's Common Name), or "" when the request did not
// come over such a connection.
func PeerIdentity(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	return r.TLS.PeerCertificates[0].Subject.CommonName
}

// Explain turns the error of a TLS dial into one that names the fix, for
// both sides' refusals; other errors pass through. A server sends one alert
// for every refusal of a client certificate, so the client cannot tell a
// foreign CA from an expired or revoked certificate: the server's log says
// which.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("the server's certificate is from another CA (issuer %q): %s: %w: %w", certIssuer(ua.Cert), DefaultFetchHint, ErrForeignCA, err)
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fmt.Errorf("the server's certificate expired or is not valid yet (check this machine's clock; otherwise the server needs a new one): %w: %w", ErrExpired, err)
	case errors.As(err, &hn):
		return fmt.Errorf("the server's certificate is for %s, not %q: dial a name it was issued for, or issue it with this one: %w: %w", names(hn.Certificate), hn.Host, ErrWrongHost, err)
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "remote error: tls: bad certificate"),
		strings.Contains(s, "remote error: tls: unknown certificate authority"),
		strings.Contains(s, "remote error: tls: certificate required"),
		strings.Contains(s, "remote error: tls: expired certificate"),
		strings.Contains(s, "remote error: tls: revoked certificate"):
		return fmt.Errorf("the server refused this client certificate: it is missing, from another CA, expired or revoked (the server's log says which); %s: %w", DefaultFetchHint, err)
	}
	return err
}

func certIssuer(c *x509.Certificate) string {
	if c == nil {
		return "unknown"
	}
	return c.Issuer.CommonName
}
