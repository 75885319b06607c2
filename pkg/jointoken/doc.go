// Package jointoken makes and redeems the one-time tokens a node joins the
// platform with (deisctl nodes:add NAME prints one; deis-agent --join TOKEN
// trades it with the coordinator for its certificate and etcd user).
//
// A token is "ID.SECRET": ID names the key <prefix>/join/<ID>, which holds
// only a SHA-256 hash of the secret, the node name and labels the token is
// bound to, and its expiry (default 15 minutes), on an etcd lease that
// removes it an hour after it expires. Reading etcd therefore does not let
// anyone join. Redeem checks the secret, the expiry and the node name, and
// then marks the token used in a transaction guarded by the key's
// ModRevision, so of two redeemers racing with one token exactly one wins;
// an expired, used, unknown or mistyped token is refused with an error that
// says what to do, and changes nothing.
//
// Issuer.Join is the coordinator's side of the exchange: the node sends its
// token and a certificate request (pki.NewCSR; its key never leaves it),
// the coordinator checks both, provisions the node's etcd user and roles
// (pkg/etcdauth), redeems the token and returns a client certificate whose
// Common Name is the node's etcd user, with the platform CA. A node that
// does not have the CA yet dials the coordinator with pki.PinnedTLS and the
// CA fingerprint printed next to the token.
package jointoken
