// Package slugstore keeps built slugs on the coordinator's disk, named by the
// sha256 of their content, and serves them to agents over HTTPS.
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
// The coordinator serves Handler over TLS (pki.ServerTLS: a client
// certificate of the platform CA is required on every connection) wrapped
// in RequirePlatform, so that only nodes and coordinators get slugs; a
// user's certificate gets 403 and plain HTTP is refused.
//
// Every slug lives on every coordinator. Register keeps this coordinator's
// lease-bound registration (state.Keys.CoordinatorMember, with its slug
// server's URL) under the member id MemberID keeps in the data directory.
// A coordinator that stored a slug records itself as a holder
// (state.Keys.SlugHolder(sha, member), Replicator.Hold). The Replicator
// runs a level-triggered loop (a watch on the holder and member keys and a
// pass every Resync): it fetches each slug some coordinator holds and this
// one lacks from the live holders, presenting the coordinator's certificate
// (ReplicatorConfig.TLS), at most the
// recorded size (and MaxBytes), through PutVerified, so a holder serving
// other bytes is refused and nothing of it kept; it then records itself, but
// only while some holder key of the slug remains (GC deletes them all when
// it collects a slug, and a collected slug is never fetched back). It also
// records files it has that are held elsewhere but not recorded here (after
// verifying them), and drops its record of a file it lost, then fetches it
// again. AwaitCopies is the builder's wait for a second copy before it
// writes a release.
//
// Errors from Put carry the "slugstore:" prefix and usually mean the disk is
// full or the directory is not writable.
package slugstore
