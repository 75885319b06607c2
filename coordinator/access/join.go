package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/jointoken"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// JoinServer serves jointoken.JoinPath: it trades a token and a
// certificate request for the node's certificate and etcd user, and records
// the node (jointoken.Member) so the access loop keeps its user.
type JoinServer struct {
	// Root is a client authenticated as etcd's root: it provisions the
	// node's user and writes the Member record.
	Root      *clientv3.Client
	CA        *pki.CA
	Prefix    string
	Endpoints []string // what the node dials
	Log       *slog.Logger
	// Lock, shared with this coordinator's Syncer, keeps a sync pass from
	// deleting the user of a node joining meanwhile (read before its record
	// was written).
	Lock *sync.Mutex
}

// NodeOptions are a node's roles from its labels (those its join token
// gave, not those it registers: a node must not widen its own reads): when
// it has role=proxy, the writes of its own acks and traffic reports and the
// reads of the routing, certificates and challenges of each formation whose
// proxy layer selects it (layers by formation). Only formations that exist
// count.
func NodeOptions(node string, labels map[string]string, formations []string, layers map[string][]state.Layer) etcdauth.NodeOptions {
	opts := etcdauth.NodeOptions{Proxy: state.LabelHas(labels, "role", "proxy")}
	if !opts.Proxy {
		return opts
	}
	n := &state.Node{Name: node, Labels: labels}
	for _, f := range formations {
		for i := range layers[f] {
			if layers[f][i].Type == state.LayerProxy && layers[f][i].Matches(n) {
				opts.Serves = append(opts.Serves, f)
				break
			}
		}
	}
	return opts
}

// Layers reads every formation's layers, by formation; keys that do not
// decode are skipped.
func Layers(ctx context.Context, kv clientv3.KV, prefix string) (map[string][]state.Layer, error) {
	k := state.NewKeys(prefix)
	resp, err := kv.Get(ctx, k.AllLayers(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	out := map[string][]state.Layer{}
	for _, e := range resp.Kvs {
		parts, ok := state.Under(string(e.Key), k.AllLayers())
		if !ok || len(parts) != 2 {
			continue
		}
		var l state.Layer
		if json.Unmarshal(e.Value, &l) != nil {
			continue
		}
		out[parts[0]] = append(out[parts[0]], l)
	}
	return out, nil
}

// FormationNames lists the formations that exist.
func FormationNames(ctx context.Context, kv clientv3.KV, prefix string) ([]string, error) {
	k := state.NewKeys(prefix)
	resp, err := kv.Get(ctx, k.Formations(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list formations: %w", err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		f := strings.TrimPrefix(string(kv.Key), k.Formations())
		if !strings.Contains(f, "/") && state.ValidateName("formation", f) == nil {
			out = append(out, f)
		}
	}
	return out, nil
}

func (s *JoinServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		fmt.Fprintln(w, "ok")
		return
	}
	if r.URL.Path != jointoken.JoinPath || r.Method != http.MethodPost {
		http.Error(w, "POST "+jointoken.JoinPath+" only", http.StatusNotFound)
		return
	}
	var req jointoken.JoinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		refuse(w, http.StatusBadRequest, "not a join request: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, err := s.Join(ctx, req)
	if err != nil {
		code := http.StatusForbidden
		if !errors.Is(err, jointoken.ErrMalformed) && !errors.Is(err, jointoken.ErrUnknown) && !errors.Is(err, jointoken.ErrExpired) &&
			!errors.Is(err, jointoken.ErrUsed) && !errors.Is(err, jointoken.ErrWrongNode) && !strings.Contains(err.Error(), "certificate request") {
			code = http.StatusInternalServerError
		}
		s.Log.Warn("join refused", "node", req.Node, "from", r.RemoteAddr, "error", err)
		refuse(w, code, err.Error())
		return
	}
	s.Log.Info("node joined", "node", resp.Node, "user", resp.EtcdUser, "from", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(jointoken.JoinError{Error: msg})
}

// Join redeems the request's token, provisions the node and records it.
func (s *JoinServer) Join(ctx context.Context, req jointoken.JoinRequest) (*jointoken.JoinResponse, error) {
	if s.Lock != nil {
		s.Lock.Lock()
		defer s.Lock.Unlock()
	}
	formations, err := FormationNames(ctx, s.Root, s.Prefix)
	if err != nil {
		return nil, err
	}
	layers, err := Layers(ctx, s.Root, s.Prefix)
	if err != nil {
		return nil, err
	}
	tokens := jointoken.New(s.Root, s.Prefix)
	claim, err := tokens.Peek(ctx, req.Token, req.Node)
	if err != nil {
		return nil, err
	}
	// The record first, so the access loop (perhaps on another coordinator)
	// keeps the user Join makes; it goes again if the join fails.
	store := state.NewStore(s.Root, s.Prefix)
	key := jointoken.MemberKey(s.Prefix, claim.Node)
	resp, err := s.Root.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) > 0 {
		return nil, fmt.Errorf("node %s has joined already: to give it new credentials, run deisctl nodes:remove %s and nodes:add it again", claim.Node, claim.Node)
	}
	m := jointoken.Member{Node: claim.Node, Labels: claim.Labels, EtcdUser: etcdauth.NewNames(s.Prefix).Node(claim.Node), Joined: time.Now().UTC()}
	if err := store.Put(ctx, key, m); err != nil {
		return nil, fmt.Errorf("record node %s: %w", claim.Node, err)
	}
	iss := &jointoken.Issuer{Tokens: tokens, CA: s.CA, Auth: s.Root, Prefix: s.Prefix,
		Options: func(c jointoken.Claim) etcdauth.NodeOptions { return NodeOptions(c.Node, c.Labels, formations, layers) }}
	cr, err := iss.Join(ctx, req.Token, req.Node, []byte(req.CSR))
	if err == nil {
		var leaf *x509.Certificate
		if leaf, err = parseCert(cr.CertPEM); err == nil {
			m.Serial = leaf.SerialNumber.Text(16)
			err = store.Put(ctx, key, m)
		}
	}
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, derr := s.Root.Delete(dctx, key); derr != nil {
			s.Log.Warn("join failed and its record stays", "node", claim.Node, "error", derr)
		}
		return nil, err
	}
	return &jointoken.JoinResponse{Node: cr.Node, Labels: cr.Labels, EtcdUser: cr.EtcdUser, Cert: string(cr.CertPEM), CA: string(cr.CAPEM),
		Endpoints: s.Endpoints, Prefix: state.NewKeys(s.Prefix).Prefix}, nil
}

// JoinTLS is the join endpoint's TLS: a server certificate for hosts
// (and loopback and this machine's name), chained to the CA so a node that
// pins the CA's fingerprint can check it. No client certificate is asked
// for: the token is the credential.
func JoinTLS(ca *pki.CA, hosts []string) (*tls.Config, error) {
	hosts = append([]string{"127.0.0.1", "localhost"}, hosts...)
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, strings.ToLower(h))
	}
	var uniq []string
	for _, h := range hosts {
		if h != "" && !has(uniq, h) {
			uniq = append(uniq, h)
		}
	}
	leaf, err := ca.IssueServer("deis coordinator", uniq, certTTL)
	if err != nil {
		return nil, err
	}
	c := leaf.TLSCertificate()
	c.Certificate = append(c.Certificate, ca.Cert.Raw)
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{c}}, nil
}

// Advertise writes where joins are served and the CA's fingerprint
// (jointoken.JoinInfo), for deisctl nodes:add.
func Advertise(ctx context.Context, kv clientv3.KV, prefix, joinURL string, ca *pki.CA) error {
	_, err := kv.Put(ctx, jointoken.JoinInfoKey(prefix), state.Marshal(jointoken.JoinInfo{URL: joinURL, CAFingerprint: ca.Fingerprint()}))
	return err
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
