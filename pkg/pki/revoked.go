package pki

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Revoked is the set of revoked certificate serial numbers. It is safe for
// concurrent use; a verifier reads it on every handshake, so a serial added
// while a server runs is refused from the next connection on.
type Revoked struct {
	mu sync.RWMutex
	m  map[string]bool // serial in lowercase hex
}

// NewRevoked returns an empty set.
func NewRevoked() *Revoked { return &Revoked{m: map[string]bool{}} }

// Add revokes serial.
func (r *Revoked) Add(serial *big.Int) {
	r.mu.Lock()
	r.m[serial.Text(16)] = true
	r.mu.Unlock()
}

// Has reports whether serial is revoked. A nil set revokes nothing.
func (r *Revoked) Has(serial *big.Int) bool {
	if r == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[serial.Text(16)]
}

// Serials lists the revoked serials in order.
func (r *Revoked) Serials() []*big.Int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*big.Int, 0, len(r.m))
	for h := range r.m {
		s, _ := new(big.Int).SetString(h, 16)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cmp(out[j]) < 0 })
	return out
}

// MarshalText is one hex serial per line.
func (r *Revoked) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	for _, s := range r.Serials() {
		b.WriteString(s.Text(16))
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// UnmarshalText replaces the set with the serials of text (one hex serial a
// line; blank lines and lines starting with # are skipped).
func (r *Revoked) UnmarshalText(text []byte) error {
	m := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		s, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(l), "0x"), 16)
		if !ok || s.Sign() <= 0 {
			return fmt.Errorf("pki: revoked serials, line %d: %q is not a hexadecimal serial number", n, l)
		}
		m[s.Text(16)] = true
	}
	r.mu.Lock()
	r.m = m
	r.mu.Unlock()
	return nil
}

// LoadRevoked reads a set that Save wrote; a missing file is an empty set.
func LoadRevoked(path string) (*Revoked, error) {
	r := NewRevoked()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pki: read revoked serials: %w", err)
	}
	return r, r.UnmarshalText(b)
}

// Save writes the set to path.
func (r *Revoked) Save(path string) error {
	b, _ := r.MarshalText()
	return writeFile(path, b, 0o644)
}

// CRL signs a PEM certificate revocation list of the serials in r, valid for
// ttl, for servers that check CRL files (etcd's --client-crl-file, read
// when a connection is made: it does not cut connections already open).
func (ca *CA) CRL(r *Revoked, number int64, ttl time.Duration) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: now.Add(-backdate), NextUpdate: now.Add(ttl)}
	for _, s := range r.Serials() {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}
