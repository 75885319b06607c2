package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
)

// LabelsFile is where a joined node keeps the labels its token carried
// (k=v, comma-separated), beside its credentials.
const LabelsFile = "labels"

// JoinConfig is how a node joins.
type JoinConfig struct {
	// Coordinator is the join URL (https://HOST:PORT) and Fingerprint the
	// platform CA's, as deisctl nodes:add printed them.
	Coordinator, Fingerprint string
	Token                    string
	Node                     string
	Prefix                   string
	// Dir is the credentials directory written (<state-dir>/credentials).
	Dir string
}

// Join trades the token for the node's certificate: it makes a key and a
// certificate request (the key never leaves this machine), sends the
// request with the token to the coordinator, which it trusts only if it
// presents the CA with the fingerprint, and writes the credentials
// directory. A refused join writes nothing.
func Join(ctx context.Context, cfg JoinConfig) (*jointoken.JoinResponse, error) {
	if cfg.Coordinator == "" || cfg.Fingerprint == "" {
		return nil, fmt.Errorf("--join needs --coordinator URL and --ca-fingerprint sha256:..., as deisctl nodes:add %s printed them", cfg.Node)
	}
	csr, _, keyPEM, err := pki.NewCSR(etcdauth.NewNames(cfg.Prefix).Node(cfg.Node))
	if err != nil {
		return nil, err
	}
	resp, err := jointoken.RequestJoin(ctx, cfg.Coordinator, cfg.Fingerprint, cfg.Token, cfg.Node, csr)
	if err != nil {
		return nil, err
	}
	if _, err := pki.ParseLeaf([]byte(resp.Cert), keyPEM); err != nil {
		return nil, fmt.Errorf("join: the coordinator's certificate does not match this node's key: %w", err)
	}
	if err := etcdconn.WriteCredentials(cfg.Dir, etcdconn.Credentials{CAPEM: []byte(resp.CA), CertPEM: []byte(resp.Cert), KeyPEM: keyPEM,
		Endpoints: resp.Endpoints, Prefix: resp.Prefix}); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, LabelsFile), []byte(FormatLabels(resp.Labels)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return resp, nil
}

// JoinedLabels are the labels a joined node's token carried ("" when none
// were recorded).
func JoinedLabels(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, LabelsFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// FormatLabels writes labels as k=v pairs, comma-separated, sorted; a
// value holding commas (a repeated key) becomes one pair per value.
func FormatLabels(labels map[string]string) string {
	var out []string
	for k, v := range labels {
		for _, one := range strings.Split(v, ",") {
			out = append(out, k+"="+one)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
