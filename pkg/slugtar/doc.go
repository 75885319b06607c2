// Package slugtar unpacks slugs: the gzipped tarballs a buildpack build
// produces, which the agent runs at /app and the builder's release phase
// mounts the same way.
//
// Extract(ctx, tgzPath, dir) unpacks into a temporary directory next to dir
// and renames it into place when complete, so dir is either whole or absent.
// Entries may start with "./". Extraction goes through an os.Root, so
// nothing is written outside dir: entries named by absolute paths or with
// ".." components are refused, as are hard links to such names and writes
// through a symlink the tarball made. Symlink targets are kept as they are
// (they are resolved inside the container, where the slug is /app). A later
// entry of the same name replaces an earlier one. Devices, fifos and other
// special files are skipped.
//
// Errors start with "slugtar: ". A refused entry names it and says to rebuild
// the slug; a file that is not a gzipped tarball says so; a cancelled ctx
// returns ctx.Err(). After an error dir does not exist (unless someone else
// created it meanwhile).
package slugtar
