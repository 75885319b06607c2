package access

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/pki"

	"github.com/deis/deis/pkg/etcdauth"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		prefix, cn string
		want       Identity
	}{
		{"", "root", Identity{Kind: Root, CN: "root"}},
		{"/deis", "deis:coordinator", Identity{Kind: Coordinator, CN: "deis:coordinator"}},
		{"/deis", "deis:user-alice", Identity{Kind: User, Name: "alice", CN: "deis:user-alice"}},
		{"/deis", "deis:node-n1", Identity{Kind: Node, Name: "n1", CN: "deis:node-n1"}},
		{"/other", "deis:user-alice", Identity{CN: "deis:user-alice"}}, // another installation
		{"/other", "other:user-alice", Identity{Kind: User, Name: "alice", CN: "other:user-alice"}},
		{"/deis", "deis:user-Bad_Name", Identity{CN: "deis:user-Bad_Name"}},
		{"/deis", "alice", Identity{CN: "alice"}},
		{"/deis", "", Identity{}},
	} {
		if got := Parse(c.prefix, c.cn); got != c.want {
			t.Errorf("Parse(%q, %q) = %+v, want %+v", c.prefix, c.cn, got, c.want)
		}
	}
}

type grants map[string]bool // "f/user"

func (g grants) MayAccess(_ context.Context, f, user string) (bool, error) {
	if user == "broken" {
		return false, errors.New("etcd down")
	}
	return g[f+"/"+user], nil
}

func TestFormation(t *testing.T) {
	ctx := context.Background()
	g := grants{"shop/alice": true}
	for _, c := range []struct {
		cn, f string
		ok    bool
		msg   string
	}{
		{"root", "shop", true, ""},
		{"deis:coordinator", "shop", true, ""},
		{"deis:user-alice", "shop", true, ""},
		{"deis:user-alice", "blog", false, "alice may not change blog: ask an administrator for deisctl perms:grant alice -f blog"},
		{"deis:user-bob", "shop", false, "bob may not change shop"},
		{"deis:node-n1", "shop", false, "node n1 may not"},
		{"", "shop", false, "no client certificate"},
		{"mallory", "shop", false, `"mallory" is no identity of this installation`},
	} {
		err := Formation(ctx, g, Parse("/deis", c.cn), c.f)
		if c.ok {
			if err != nil {
				t.Errorf("%s on %s: %v", c.cn, c.f, err)
			}
			continue
		}
		if !IsDenied(err) || !etcdauth.IsPermissionDenied(err) || !strings.Contains(err.Error(), c.msg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s on %s: %v, want a one-line refusal with %q", c.cn, c.f, err, c.msg)
		}
	}
	if err := Formation(ctx, g, Parse("/deis", "deis:user-broken"), "shop"); err == nil || IsDenied(err) {
		t.Errorf("a failing store: %v, want its error, not a refusal", err)
	}
}

func TestLoadCreds(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Create(filepath.Join(dir, "pki"), "test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("deis:user-alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.WriteFiles(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadCreds(filepath.Join(dir, "pki", pki.CACertFile), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity() != "deis:user-alice" || c.ClientTLS() == nil {
		t.Errorf("identity %q", c.Identity())
	}
	if _, err := c.Verifier.Verify([]*x509.Certificate{leaf.Cert}, pki.Client, ""); err != nil {
		t.Errorf("the loaded CA does not verify its leaf: %v", err)
	}
	if _, err := LoadCreds(cert, cert, key); err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Errorf("a leaf as the CA: %v", err)
	}
	if _, err := LoadCreds("", cert, key); err == nil || !strings.Contains(err.Error(), "--credentials") {
		t.Errorf("no CA: %v", err)
	}
}
