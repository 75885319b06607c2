// Package pkitest makes a throwaway platform CA for tests of the TLS
// servers and clients that require certificates of it (agent API, slug
// server, slug downloads): server and client configs, and a foreign CA's
// client config that they must refuse.
package pkitest
