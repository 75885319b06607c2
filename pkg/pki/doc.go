// Package pki is the platform's certificate authority: it creates a CA in a
// directory (or loads an operator's), issues server, client and peer
// certificates from it, keeps a simple set of revoked serial numbers, and
// builds the tls.Config of servers that accept only clients with a
// certificate of this CA and of clients that trust only servers of it.
//
// Keys are ECDSA P-256: etcd, gRPC and Go's TLS all accept them. Server
// certificates carry ExtKeyUsageServerAuth and their IP and DNS names as
// SANs; client certificates carry ExtKeyUsageClientAuth and the identity as
// their Common Name (with --client-cert-auth, etcd takes a client
// certificate's CN as the etcd user of each request); peer certificates
// (etcd members talking to each other) carry both usages.
//
// Revocation is a set of serial numbers (Revoked) that this package's
// verifiers check on every handshake. etcd does not consult it: etcd can
// check a CRL file (CA.CRL, --client-crl-file) but only when a connection
// is made, and an open gRPC connection lives on. A node's or user's access
// to etcd is therefore revoked by deleting its etcd user and role
// (pkg/etcdauth RemoveNode, RemoveUser), which etcd enforces on the next
// request; the revoked serial is for the platform's own TLS servers (slug
// server, agent API).
package pki
