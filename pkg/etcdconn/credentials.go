package etcdconn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files of a credentials directory: how a binary finds its identity.
const (
	CredCA        = "ca.crt"     // the platform CA (trusts etcd's server certificate)
	CredCert      = "client.crt" // the client certificate; its Common Name is the etcd user
	CredKey       = "client.key" // its key (0600)
	CredEndpoints = "endpoints"  // one etcd client URL per line
	CredPrefix    = "prefix"     // optional: the installation's key prefix
)

// UserCredentialsDir is where deisctl looks for its credentials when
// neither --credentials nor DEIS_CREDENTIALS names a directory:
// ~/.config/deis (the coordinator of a one-machine install writes the
// administrator's credential there).
func UserCredentialsDir() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "deis")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "deis")
	}
	return ""
}

// Credentials are what a credentials directory holds.
type Credentials struct {
	CAPEM     []byte
	CertPEM   []byte
	KeyPEM    []byte
	Endpoints []string
	Prefix    string
}

// WriteCredentials writes c into dir (created 0700): the key 0600, the rest
// 0644. Each file is written through a temporary file and a rename, the key
// last but one and the certificate last, so a reader sees a whole pair.
func WriteCredentials(dir string, c Credentials) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("etcdconn: credentials directory: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CredCA, c.CAPEM, 0o644},
		{CredEndpoints, []byte(strings.Join(c.Endpoints, "\n") + "\n"), 0o644},
		{CredPrefix, []byte(c.Prefix + "\n"), 0o644},
		{CredKey, c.KeyPEM, 0o600},
		{CredCert, c.CertPEM, 0o644},
	}
	for _, f := range files {
		if f.name == CredPrefix && c.Prefix == "" {
			continue
		}
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// HasCredentials reports whether dir holds a client certificate.
func HasCredentials(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CredCert))
	return err == nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("etcdconn: write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("etcdconn: write %s: %w", path, err)
	}
	return nil
}

// WithCredentials fills what cfg does not say from its credentials
// directory (cfg.Credentials): endpoints, CA, certificate and key, and the
// prefix unless prefixSet. A directory that does not exist or holds no
// certificate is an error naming the fix.
func (cfg Config) WithCredentials(prefixSet bool) (Config, error) {
	dir := cfg.Credentials
	if dir == "" {
		return cfg, nil
	}
	if _, err := os.Stat(filepath.Join(dir, CredCert)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return cfg, fmt.Errorf("etcdconn: no credentials: %s holds no %s: give the directory an administrator or the coordinator wrote (--credentials, DEIS_CREDENTIALS), or join the node with deis-agent --join", dir, CredCert)
		}
		return cfg, fmt.Errorf("etcdconn: credentials: %w", err)
	}
	if len(cfg.Endpoints) == 0 {
		b, err := os.ReadFile(filepath.Join(dir, CredEndpoints))
		if err != nil {
			return cfg, fmt.Errorf("etcdconn: credentials %s: %w: the file lists etcd's client URLs, one a line", dir, err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				cfg.Endpoints = append(cfg.Endpoints, l)
			}
		}
	}
	if cfg.CAFile == "" {
		cfg.CAFile = filepath.Join(dir, CredCA)
	}
	if cfg.CertFile == "" && cfg.Username == "" {
		cfg.CertFile, cfg.KeyFile = filepath.Join(dir, CredCert), filepath.Join(dir, CredKey)
	}
	if !prefixSet {
		if b, err := os.ReadFile(filepath.Join(dir, CredPrefix)); err == nil {
			if p := strings.TrimSpace(string(b)); p != "" {
				cfg.Prefix = p
			}
		}
	}
	return cfg, nil
}
