package jointoken

import (
	"math/big"
	"time"

	"github.com/deis/deis/pkg/state"
)

// Member records a node that joined: the coordinator writes it (with etcd's
// root) once the node has its certificate; deisctl nodes:remove deletes it
// and records the certificate's serial as revoked, in one transaction. The
// coordinators' access loop keeps the node's etcd user while the record
// exists, and removes it once it is gone.
type Member struct {
	Node     string            `json:"node"`
	Labels   map[string]string `json:"labels,omitempty"`
	EtcdUser string            `json:"etcdUser"`
	// Serial is the node certificate's serial number in hex.
	Serial string    `json:"serial"`
	Joined time.Time `json:"joined"`
}

// Revocation records a certificate that may no longer be used: the
// platform's own TLS servers refuse it (pki.Revoked), and while the node has
// no Member record the access loop keeps it off the cluster (its etcd user
// deleted, its heartbeat removed so the scheduler moves its containers).
type Revocation struct {
	Node   string    `json:"node,omitempty"`
	User   string    `json:"user,omitempty"`
	Serial string    `json:"serial"`
	At     time.Time `json:"at"`
}

// Members is the prefix of the Member records (<prefix>/joined/).
func Members(prefix string) string { return state.NewKeys(prefix).Prefix + "/joined/" }

// MemberKey is node's Member record.
func MemberKey(prefix, node string) string { return Members(prefix) + node }

// Revocations is the prefix of the Revocation records (<prefix>/revoked/).
func Revocations(prefix string) string { return state.NewKeys(prefix).Prefix + "/revoked/" }

// RevocationKey is the Revocation record of the certificate with serial.
func RevocationKey(prefix string, serial *big.Int) string {
	return Revocations(prefix) + serial.Text(16)
}

// JoinInfo is what deisctl nodes:add prints next to a token: where the
// coordinators serve joins and the fingerprint of the platform CA the
// joining node pins. Coordinators write it at <prefix>/coordinator/join.
type JoinInfo struct {
	URL           string `json:"url"`
	CAFingerprint string `json:"caFingerprint"`
}

// JoinInfoKey is where JoinInfo lives.
func JoinInfoKey(prefix string) string { return state.NewKeys(prefix).Prefix + "/coordinator/join" }
