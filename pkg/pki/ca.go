package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a CA created by Create, inside its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Default lifetimes.
const (
	DefaultCATTL   = 10 * 365 * 24 * time.Hour
	DefaultLeafTTL = 365 * 24 * time.Hour
)

// backdate is how far before "now" a certificate starts to be valid, so a
// peer whose clock is a little behind accepts it at once.
const backdate = 5 * time.Minute

// Usage is what a certificate may be used for.
type Usage int

const (
	// Server certificates authenticate a TLS server (ExtKeyUsageServerAuth).
	Server Usage = 1 << iota
	// Client certificates authenticate a TLS client (ExtKeyUsageClientAuth).
	Client
	// Peer certificates are both: etcd members dial each other and serve.
	Peer = Server | Client
)

func (u Usage) String() string {
	switch u {
	case Server:
		return "server"
	case Client:
		return "client"
	case Peer:
		return "peer"
	}
	return fmt.Sprintf("usage(%d)", int(u))
}

func (u Usage) extKeyUsages() []x509.ExtKeyUsage {
	var eku []x509.ExtKeyUsage
	if u&Server != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if u&Client != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	return eku
}

// CA is the platform's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// Create makes a new CA named name (its Common Name) valid for ttl (0 means
// DefaultCATTL) and writes it into dir as ca.crt (0644) and ca.key (0600),
// creating dir with mode 0700. It refuses to overwrite a CA already there:
// every certificate issued from that one would stop being trusted.
func Create(dir, name string, ttl time.Duration) (*CA, error) {
	if name == "" {
		return nil, errors.New("pki: a CA needs a name")
	}
	if ttl <= 0 {
		ttl = DefaultCATTL
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("pki: %s already exists: load that CA (pki.LoadDir) or move it away first; a new CA would invalidate every certificate issued by it", p)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"deis"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
	// The key first: a directory with a certificate and no key is not a CA.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadDir loads the CA that Create wrote into dir.
func LoadDir(dir string) (*CA, error) {
	return Load(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
}

// LoadOrCreate loads the CA in dir, or creates one named name when dir holds
// none. created tells which.
func LoadOrCreate(dir, name string) (ca *CA, created bool, err error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		ca, err := LoadDir(dir)
		return ca, false, err
	}
	ca, err = Create(dir, name, 0)
	return ca, err == nil, err
}

// Load loads an operator's CA: a PEM certificate and its PEM private key
// (PKCS#8, SEC 1 EC or PKCS#1 RSA). The certificate must be a CA that may
// sign certificates, and the key must be its key. A key file readable by
// others than its owner is refused.
func Load(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA certificate: %w", err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("pki: CA key %s has mode %04o: anyone on this machine could issue certificates; chmod 600 %s", keyPath, fi.Mode().Perm(), keyPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	return Parse(certPEM, keyPEM)
}

// Parse is Load from PEM bytes.
func Parse(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: certificate %q is not a CA (basic constraints CA:FALSE): give the CA's certificate, not a leaf", cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki: CA %q may not sign certificates (no keyCertSign key usage)", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: the CA key does not belong to the CA certificate %q: give the key file made with that certificate", cert.Subject.CommonName)
	}
	// Keep exactly one certificate: the CA's.
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key}, nil
}

// Pool is a certificate pool that trusts only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Request describes a certificate to issue.
type Request struct {
	// CommonName is the identity: the etcd user of a client certificate.
	CommonName string
	Usage      Usage
	// DNSNames and IPs are the subject alternative names of a server or
	// peer certificate.
	DNSNames []string
	IPs      []net.IP
	// TTL is how long it is valid (0 means DefaultLeafTTL); it never
	// outlives the CA.
	TTL time.Duration
	// NotBefore is when it starts to be valid (zero means a few minutes
	// ago).
	NotBefore time.Time
}

// Leaf is an issued certificate and its private key.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte // the leaf only
	KeyPEM  []byte
	Key     crypto.Signer
}

// Issue signs a new certificate with a fresh ECDSA P-256 key.
func (ca *CA) Issue(r Request) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	return ca.issue(r, &key.PublicKey, key)
}

// issue signs a certificate for pub; key, when not nil, is its private key
// and goes into the Leaf.
func (ca *CA) issue(r Request, pub crypto.PublicKey, key crypto.Signer) (*Leaf, error) {
	if r.CommonName == "" {
		return nil, errors.New("pki: a certificate needs a common name (the identity)")
	}
	if r.Usage&Peer == 0 || r.Usage&^Peer != 0 {
		return nil, fmt.Errorf("pki: certificate for %q: usage must be pki.Server, pki.Client or pki.Peer", r.CommonName)
	}
	if r.Usage&Server != 0 && len(r.DNSNames) == 0 && len(r.IPs) == 0 {
		return nil, fmt.Errorf("pki: %s certificate for %q needs at least one DNS name or IP address its clients dial", r.Usage, r.CommonName)
	}
	for _, d := range r.DNSNames {
		if d == "" || strings.ContainsAny(d, " /:") {
			return nil, fmt.Errorf("pki: certificate for %q: invalid DNS name %q", r.CommonName, d)
		}
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = DefaultLeafTTL
	}
	nb := r.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-backdate)
	}
	na := nb.Add(ttl)
	if na.After(ca.Cert.NotAfter) {
		na = ca.Cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.CommonName},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  r.Usage.extKeyUsages(),
		DNSNames:     r.DNSNames,
		IPAddresses:  r.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for %q: %w", r.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate: %w", err)
	}
	leaf := &Leaf{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: key}
	if key != nil {
		if leaf.KeyPEM, err = encodeKey(key); err != nil {
			return nil, err
		}
	}
	return leaf, nil
}

// IssueServer issues a server certificate for hosts (IP addresses and DNS
// names, sorted out here).
func (ca *CA) IssueServer(name string, hosts []string, ttl time.Duration) (*Leaf, error) {
	dns, ips := SplitHosts(hosts)
	return ca.Issue(Request{CommonName: name, Usage: Server, DNSNames: dns, IPs: ips, TTL: ttl})
}

// IssuePeer issues a certificate that both serves hosts and dials as name.
func (ca *CA) IssuePeer(name string, hosts []string, ttl time.Duration) (*Leaf, error) {
	dns, ips := SplitHosts(hosts)
	return ca.Issue(Request{CommonName: name, Usage: Peer, DNSNames: dns, IPs: ips, TTL: ttl})
}

// IssueClient issues a client certificate whose Common Name is identity.
func (ca *CA) IssueClient(identity string, ttl time.Duration) (*Leaf, error) {
	return ca.Issue(Request{CommonName: identity, Usage: Client, TTL: ttl})
}

// SplitHosts sorts host names into DNS names and IP addresses.
func SplitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// TLSCertificate is the leaf for a tls.Config.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

// WriteFiles writes the certificate to dir/name.crt (0644) and its key to
// dir/name.key (0600), creating dir with mode 0700, and returns their paths.
func (l *Leaf) WriteFiles(dir, name string) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("pki: create %s: %w", dir, err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writeFile(keyPath, l.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, l.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// WriteCA writes the CA's certificate (never its key) to path, for clients
// and servers that must trust it.
func (ca *CA) WriteCA(path string) error { return writeFile(path, ca.CertPEM, 0o644) }

// LoadLeaf reads a certificate and key that WriteFiles wrote.
func LoadLeaf(certPath, keyPath string) (*Leaf, error) {
	cp, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	kp, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read key: %w", err)
	}
	l, err := ParseLeaf(cp, kp)
	if err != nil {
		return nil, fmt.Errorf("pki: %s, %s: %w", certPath, keyPath, err)
	}
	return l, nil
}

// ParseLeaf is LoadLeaf from PEM bytes: a joined node's certificate and the
// key it kept.
func ParseLeaf(certPEM, keyPEM []byte) (*Leaf, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, errors.New("the key is not the certificate's")
	}
	return &Leaf{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), KeyPEM: keyPEM, Key: key}, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never zero
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

func parseKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key block")
		}
		var k any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}

// writeFile writes data to path with mode through a temporary file and a
// rename, so a reader never sees half a key and the mode holds from the
// first byte.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

// Fingerprint is the SHA-256 of the CA certificate, "sha256:" and hex: a
// joining node that has not yet got the CA pins it with this (PinnedTLS).
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint is the SHA-256 of c, "sha256:" and hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NewCSR makes a key and a certificate request for identity; the key stays
// with the caller (a joining node), only the request travels.
func NewCSR(identity string) (csrPEM []byte, key crypto.Signer, keyPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: identity}}, k)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	keyPEM, err = encodeKey(k)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), k, keyPEM, nil
}

// ParseCSR reads a PEM certificate request and checks that its signature
// holds (the requester has the key) and its key is one this CA signs.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: not a PEM CERTIFICATE REQUEST: send the request pki.NewCSR made")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: certificate request is not signed by its key: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("pki: certificate request: use an ECDSA P-256 or P-384 key")
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("pki: certificate request: an RSA key needs at least 2048 bits")
		}
	default:
		return nil, fmt.Errorf("pki: certificate request: unsupported key type %T", csr.PublicKey)
	}
	return csr, nil
}

// SignCSR issues a certificate for the public key of csrPEM (ParseCSR).
// Everything else comes from r, never from the request: a node asks for a
// certificate, the CA decides whose it is. The Leaf returned has no key.
func (ca *CA) SignCSR(csrPEM []byte, r Request) (*Leaf, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.issue(r, csr.PublicKey, nil)
}
