package jointoken

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/deis/deis/pkg/pki"
)

// JoinPath is where coordinators serve joins (POST, JSON).
const JoinPath = "/join"

// JoinRequest is what a joining node sends.
type JoinRequest struct {
	Token string `json:"token"`
	Node  string `json:"node"`
	CSR   string `json:"csr"` // PEM, pki.NewCSR
}

// JoinResponse is what it gets back: Credentials and where etcd is.
type JoinResponse struct {
	Node      string            `json:"node"`
	Labels    map[string]string `json:"labels,omitempty"`
	EtcdUser  string            `json:"etcdUser"`
	Cert      string            `json:"cert"`
	CA        string            `json:"ca"`
	Endpoints []string          `json:"endpoints"`
	Prefix    string            `json:"prefix"`
}

// JoinError is the body of a refused join.
type JoinError struct {
	Error string `json:"error"`
}

// RequestJoin trades token for node's certificate with the coordinator at
// coordinator (https://host:port), which it trusts only if it presents the
// CA with fingerprint. csrPEM is the node's request (its key stays with it).
func RequestJoin(ctx context.Context, coordinator, fingerprint, token, node string, csrPEM []byte) (*JoinResponse, error) {
	u, err := url.Parse(coordinator)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--coordinator %q: give the join URL deisctl nodes:add printed (https://HOST:PORT)", coordinator)
	}
	if !strings.HasPrefix(fingerprint, "sha256:") {
		return nil, fmt.Errorf("--ca-fingerprint %q: give the fingerprint deisctl nodes:add printed (sha256:...)", fingerprint)
	}
	body, _ := json.Marshal(JoinRequest{Token: token, Node: node, CSR: string(csrPEM)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(coordinator, "/")+JoinPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.PinnedTLS(fingerprint, u.Hostname())}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("join at %s: %w", coordinator, pki.Explain(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("join at %s: %w", coordinator, err)
	}
	if resp.StatusCode != http.StatusOK {
		var je JoinError
		if json.Unmarshal(b, &je) == nil && je.Error != "" {
			return nil, fmt.Errorf("join refused: %s", je.Error)
		}
		return nil, fmt.Errorf("join at %s: %s: %s", coordinator, resp.Status, strings.TrimSpace(string(b)))
	}
	var jr JoinResponse
	if err := json.Unmarshal(b, &jr); err != nil {
		return nil, fmt.Errorf("join at %s: bad answer: %w", coordinator, err)
	}
	return &jr, nil
}
