package etcdconn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A credentials directory fills endpoints, CA, certificate, key and prefix;
// what is given explicitly wins.
func TestCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := WriteCredentials(dir, Credentials{CAPEM: []byte("ca"), CertPEM: []byte("cert"), KeyPEM: []byte("key"),
		Endpoints: []string{"https://a:2379", "https://b:2379"}, Prefix: "/shop"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, CredKey)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	got, err := Config{Credentials: dir, Prefix: "/deis"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Endpoints, ",") != "https://a:2379,https://b:2379" || got.CAFile != filepath.Join(dir, CredCA) ||
		got.CertFile != filepath.Join(dir, CredCert) || got.KeyFile != filepath.Join(dir, CredKey) || got.Prefix != "/shop" {
		t.Fatalf("resolved %+v", got)
	}
	got, err = Config{Credentials: dir, Endpoints: []string{"https://c:2379"}, Prefix: "/deis", prefixSet: true}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got.Endpoints[0] != "https://c:2379" || got.Prefix != "/deis" {
		t.Fatalf("explicit settings lost: %+v", got)
	}
}

func TestNoCredentials(t *testing.T) {
	_, err := Config{Credentials: t.TempDir()}.Resolve()
	if err == nil || !strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("err = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Config{Endpoints: []string{"https://127.0.0.1:1"}}.Dial(ctx)
	if err == nil || !strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), "--credentials") {
		t.Fatalf("dial without credentials: %v", err)
	}
}
