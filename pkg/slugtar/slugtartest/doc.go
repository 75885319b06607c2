// Package slugtartest builds slug tarballs for tests: Tarball(t, entries...)
// returns the gzipped bytes, failing t when they cannot be written.
package slugtartest
