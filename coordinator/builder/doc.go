// Package builder turns a pushed commit into a slug and a release, the way
// Heroku does, in an ephemeral container of the stack image.
//
// Build takes the per-formation build lock (a second push of the same
// formation waits and says so) and one of MaxParallel build slots, then:
//
//  1. reads and parses the commit's Procfile, if any (an invalid one fails
//     the build before anything runs);
//  2. creates a container of the stack image running build.sh as the
//     unprivileged user 1000, copies `git archive` of the commit into
//     /tmp/build, and mounts the buildpacks (read-only), the formation's
//     build cache, its config as one file per variable (ENV_DIR) and an
//     output directory;
//  3. inside, the first buildpack whose bin/detect succeeds runs bin/compile
//     and bin/release (Heroku's buildpack API), and the app directory is
//     tarred into the slug;
//  4. streams the container's output line by line to the pusher and to
//     DataDir/builds/<formation>/<build id>.log, enforcing Timeout, and
//     always removes the container;
//  5. takes the process types from the Procfile or else from bin/release's
//     default_process_types, checks MaxSlugBytes, stores the slug in the
//     slug store, and writes the build and release N+1 in one transaction
//     guarded by the config key, so a concurrent config:set is never lost.
//
// The bundled buildpacks live in buildpacks/NN-name and are embedded in the
// binary; New extracts them to DataDir/buildpacks.
//
// Handler serves the same as a plain-text streaming HTTP API for the git
// pre-receive hook (see RequestBuild and ListenUnix).
//
// Errors from Build carry the "builder:" prefix and are written for the
// pusher: an invalid Procfile (with its line), no buildpack for the app, a
// failed compile, the time limit (TimeLimitError), the slug size limit, or a
// formation that does not exist. A failed build writes nothing to etcd.
package builder
