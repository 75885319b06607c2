package jointoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultTTL is how long a token is valid when the caller does not say.
const DefaultTTL = 15 * time.Minute

// MaxTTL is the longest lifetime a token may have.
const MaxTTL = 24 * time.Hour

// Retention is how long after its expiry a token's key stays, so that using
// it then says "expired" or "already used" rather than "unknown".
const Retention = time.Hour

// Errors a refused token wraps, for errors.Is.
var (
	ErrMalformed = errors.New("not a join token")
	ErrUnknown   = errors.New("unknown join token")
	ErrExpired   = errors.New("join token expired")
	ErrUsed      = errors.New("join token already used")
	ErrWrongNode = errors.New("join token is for another node")
)

// Etcd is what the store needs of an etcd client.
type Etcd interface {
	clientv3.KV
	Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error)
}

// Store makes and redeems tokens under one installation's prefix.
type Store struct {
	etcd   Etcd
	prefix string
	// Now is the clock (nil means time.Now).
	Now func() time.Time
}

// New returns the store of the installation under prefix ("" means
// state.DefaultPrefix).
func New(etcd Etcd, prefix string) *Store {
	return &Store{etcd: etcd, prefix: state.NewKeys(prefix).Prefix + "/join/"}
}

// Key is the etcd key of the token with id.
func (s *Store) Key(id string) string { return s.prefix + id }

// Prefix is where tokens live.
func (s *Store) Prefix() string { return s.prefix }

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Token is a token just made: Secret is the whole token to hand to the node
// ("ID.SECRET"), shown once and stored nowhere.
type Token struct {
	ID      string
	Secret  string
	Node    string
	Labels  map[string]string
	Expires time.Time
}

// String is the token as the node gives it.
func (t Token) String() string { return t.Secret }

// Claim is what a redeemed token grants: the node it was bound to and its
// labels.
type Claim struct {
	ID     string
	Node   string
	Labels map[string]string
}

// record is the value stored at Key(id).
type record struct {
	Hash    string            `json:"hash"`
	Node    string            `json:"node"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created time.Time         `json:"created"`
	Expires time.Time         `json:"expires"`
	Used    *time.Time        `json:"used,omitempty"`
}

var (
	idRe     = regexp.MustCompile(`^[0-9a-f]{16}$`)
	secretRe = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	labelKey = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)
)

func hash(id, secret string) string {
	h := sha256.Sum256([]byte("deis-join:" + id + ":" + secret))
	return hex.EncodeToString(h[:])
}

// Create makes a token for node with labels, valid for ttl (0 means
// DefaultTTL, at most MaxTTL).
func (s *Store) Create(ctx context.Context, node string, labels map[string]string, ttl time.Duration) (Token, error) {
	if err := state.ValidateName("node", node); err != nil {
		return Token{}, err
	}
	if err := validateLabels(labels); err != nil {
		return Token{}, err
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < time.Second || ttl > MaxTTL {
		return Token{}, fmt.Errorf("join token lifetime %s: give between 1s and %s", ttl, MaxTTL)
	}
	idb := make([]byte, 8)
	sb := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return Token{}, fmt.Errorf("jointoken: %w", err)
	}
	if _, err := rand.Read(sb); err != nil {
		return Token{}, fmt.Errorf("jointoken: %w", err)
	}
	id, secret := hex.EncodeToString(idb), base64.RawURLEncoding.EncodeToString(sb)
	now := s.now().UTC()
	rec := record{Hash: hash(id, secret), Node: node, Labels: labels, Created: now, Expires: now.Add(ttl)}
	b, err := json.Marshal(rec)
	if err != nil {
		return Token{}, fmt.Errorf("jointoken: %w", err)
	}
	lease, err := s.etcd.Grant(ctx, int64((ttl+Retention)/time.Second))
	if err != nil {
		return Token{}, fmt.Errorf("jointoken: lease for token of %s: %w", node, err)
	}
	key := s.Key(id)
	resp, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return Token{}, fmt.Errorf("jointoken: store token of %s: %w", node, err)
	}
	if !resp.Succeeded {
		return Token{}, fmt.Errorf("jointoken: token id %s is taken (a 1 in 2^64 chance): try again", id)
	}
	return Token{ID: id, Secret: id + "." + secret, Node: node, Labels: labels, Expires: rec.Expires}, nil
}

func validateLabels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(k) > 63 || !labelKey.MatchString(k) {
			return fmt.Errorf("invalid label %q: use lowercase letters, digits, '.', '-' and '_'", k)
		}
		if v := labels[k]; len(v) > 253 || strings.ContainsAny(v, "= \t\n\r\"") {
			return fmt.Errorf("invalid value %q of label %s: at most 253 characters, no '=', spaces or quotes", v, k)
		}
	}
	return nil
}

// Parse splits a token into its id and secret.
func Parse(token string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || !idRe.MatchString(id) || !secretRe.MatchString(secret) {
		return "", "", fmt.Errorf("%w: it looks like 0123456789abcdef.<43 characters>, as deisctl nodes:add printed it; copy it whole", ErrMalformed)
	}
	return id, secret, nil
}

func askNew(node string) string {
	if node == "" {
		node = "NAME"
	}
	return "ask an administrator for a new one with deisctl nodes:add " + node
}

// Peek checks token as Redeem does (secret, expiry, node) without using
// it, and returns what it would grant.
func (s *Store) Peek(ctx context.Context, token, node string) (Claim, error) {
	cl, _, _, err := s.check(ctx, token, node)
	return cl, err
}

// check reads and verifies token; it returns the claim, the record and the
// key's ModRevision.
func (s *Store) check(ctx context.Context, token, node string) (Claim, record, int64, error) {
	id, secret, err := Parse(token)
	if err != nil {
		return Claim{}, record{}, 0, err
	}
	key := s.Key(id)
	resp, err := s.etcd.Get(ctx, key)
	if err != nil {
		return Claim{}, record{}, 0, fmt.Errorf("jointoken: read token: %w", err)
	}
	unknown := fmt.Errorf("%w (never issued, mistyped, or expired over %s ago): %s", ErrUnknown, Retention, askNew(node))
	if len(resp.Kvs) == 0 {
		return Claim{}, record{}, 0, unknown
	}
	kv := resp.Kvs[0]
	var rec record
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return Claim{}, record{}, 0, fmt.Errorf("jointoken: token %s is unreadable (%v): %s", id, err, askNew(node))
	}
	if subtle.ConstantTimeCompare([]byte(hash(id, secret)), []byte(rec.Hash)) != 1 {
		return Claim{}, record{}, 0, unknown
	}
	if rec.Used != nil {
		return Claim{}, record{}, 0, fmt.Errorf("%w: the token for node %s was used at %s; a token joins one node once: %s", ErrUsed, rec.Node, rec.Used.UTC().Format(time.RFC3339), askNew(rec.Node))
	}
	if !s.now().UTC().Before(rec.Expires) {
		return Claim{}, record{}, 0, fmt.Errorf("%w: the token for node %s expired at %s: %s", ErrExpired, rec.Node, rec.Expires.Format(time.RFC3339), askNew(rec.Node))
	}
	if node != "" && node != rec.Node {
		return Claim{}, record{}, 0, fmt.Errorf("%w: this token is for node %q, not %q: start the agent with the name %q, or %s", ErrWrongNode, rec.Node, node, rec.Node, askNew(node))
	}
	return Claim{ID: id, Node: rec.Node, Labels: rec.Labels}, rec, kv.ModRevision, nil
}

// Redeem uses token once. node, when not empty, is the name the joining
// agent expects; it must be the one the token is bound to. The claim
// returned names the node and its labels. A refused token changes nothing.
func (s *Store) Redeem(ctx context.Context, token, node string) (Claim, error) {
	cl, rec, rev, err := s.check(ctx, token, node)
	if err != nil {
		return Claim{}, err
	}
	now := s.now().UTC()
	rec.Used = &now
	b, err := json.Marshal(rec)
	if err != nil {
		return Claim{}, fmt.Errorf("jointoken: %w", err)
	}
	// Used only if nobody used it since we read it; the key keeps its
	// lease, so it still goes away after Retention.
	key := s.Key(cl.ID)
	tr, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithIgnoreLease())).Commit()
	if err != nil {
		return Claim{}, fmt.Errorf("jointoken: redeem token: %w", err)
	}
	if !tr.Succeeded {
		return Claim{}, fmt.Errorf("%w: the token for node %s was used by someone else just now: %s", ErrUsed, rec.Node, askNew(rec.Node))
	}
	return cl, nil
}
