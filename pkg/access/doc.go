// Package access says who the caller of a platform TLS server is and
// whether it may read and change a formation (issue 10). The agent API
// (logs, run) and the coordinator's build logs ask it; the slug server asks
// only whether the caller is the platform's own (a node or a coordinator).
//
// A caller is named by the Common Name of its client certificate, which
// pkg/pki's ServerTLS has checked against the platform CA, and which is also
// its etcd user (pkg/etcdauth names): "<p>:coordinator", "<p>:node-<n>",
// "<p>:user-<u>", or etcd's "root". Formation allows the root and the
// coordinator, and a user who is an administrator or holds the formation's
// grant (/perms/<f>/<u>), as the records in etcd say (state.Store.MayAccess);
// everyone else is refused with the one line deisctl prints for etcd's own
// refusals (etcdauth.Denied).
package access
