// Package slugtar unpacks slugs: the gzipped tarballs a buildpack build
// produces, which the agent runs at /app and the builder's release phase
// mounts the same way.
//
// ExtractLimited(ctx, tgzPath, dir, limits) unpacks into a temporary
// directory next to dir and renames it into place when complete, so dir is
// either whole or absent; Extract does the same within DefaultLimits.
// Entries may start with "./". Extraction goes through an os.Root, so
// nothing is written outside dir: entries named by absolute paths or with
// ".." components are refused, as are hard links to such names and writes
// through a symlink the tarball made. Symlink targets are kept as they are
// (they are resolved inside the container, where the slug is /app). A later
// entry of the same name replaces an earlier one. Devices, fifos and other
// special files are refused.
//
// Check(ctx, r, limits) reads a slug from a stream and refuses it for the
// same reasons ExtractLimited would, writing nothing: the builder checks
// each slug while it streams into the slug store, so that a slug the nodes
// would refuse fails the push instead.
//
// The extracted files belong to the caller (root, on a node) and are
// readable by everyone but writable by the owner only: directories 0755,
// files 0644, or 0755 when the tarball gave them any execute bit. Apps run
// as a uid of their own (see state.AppUID), which can read and run its slug
// but not change it; setuid bits never survive.
//
// # Limits
//
// A slug is a small compressed file that may expand to anything (a tar
// bomb). Limits bounds the total size of its files and its number of
// entries; LimitsFor derives them from the platform's slug size limit:
// ExpandFactor (8) times --max-slug-bytes, and --max-slug-entries
// (DefaultMaxEntries, 200,000) entries. Sizes are checked from each entry's header before anything of it
// is written, so a refused slug never writes more than the limit.
//
// Errors start with "slugtar: ". A refused entry names it and says to rebuild
// the slug; a file that is not a gzipped tarball says so; a slug beyond its
// limits says which ("slugtar: the slug expands past 8.0GB (8x
// --max-slug-bytes): refusing it") and matches ErrTooLarge; a cancelled ctx
// returns ctx.Err(). After an error dir does not exist (unless someone else
// created it meanwhile).
package slugtar
