// Package certtest makes TLS certificates for tests: a throwaway CA that
// issues leaf certificates for given DNS names and validity, as PEM files a
// test passes to deisctl certs:add, and a pool a client trusts.
package certtest
