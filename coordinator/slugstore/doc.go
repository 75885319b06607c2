// Package slugstore keeps built slugs on the coordinator's disk, named by the
// sha256 of their content, and serves them to agents over HTTP.
//
// A slug is the gzipped tar of a built app directory. Put streams one into a
// temporary file, hashes it on the way and renames it to Dir/<sha256>.tgz, so
// a slug is either complete under its final name or absent, and two builds
// that produce the same bytes share one file. Handler serves
// GET /slugs/<sha256>.tgz (with Range support); any other path, or a slug that
// is not stored, answers 404. Agents verify the sha256 of what they download.
//
// List, Remove and RemoveIncoming serve garbage collection (the builder's
// GC decides what to remove).
//
// Downloads can require a bearer token: RequireToken wraps Handler so that
// only requests with "Authorization: Bearer <token>" get slugs (the
// coordinator uses the platform token, which agents send).
//
// Errors from Put carry the "slugstore:" prefix and usually mean the disk is
// full or the directory is not writable.
package slugstore
