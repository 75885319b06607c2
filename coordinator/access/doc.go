// Package access is the coordinator's side of least privilege (issue 10):
//
//   - Bootstrap: the platform CA (pkg/pki) in DATA_DIR/pki or an operator's,
//     the certificates of the embedded etcd (TLS and client certificates on
//     its client and peer URLs), etcd's root user (client certificate only,
//     kept in DATA_DIR/pki for provisioning), auth enabled, the
//     coordinators' own user and the administrator's credential.
//   - Join: an HTTPS endpoint (the coordinator's certificate, chained to
//     the CA so a joining node can pin its fingerprint) that trades a
//     one-time token and a certificate request for the node's certificate
//     and etcd user (jointoken.Issuer), and records the node
//     (jointoken.Member).
//   - Sync: a level-triggered loop, run by one coordinator at a time (its own
//     election), that keeps etcd's users and roles in step with the
//     platform's records (joined nodes, users, grants, formations) with
//     etcdauth.Sync, and takes revoked nodes off the cluster (their
//     heartbeat deleted, so the scheduler re-places their containers).
package access
