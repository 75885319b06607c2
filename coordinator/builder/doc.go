// Package builder turns a pushed commit into a slug (or an image) and a
// release, the way Heroku does, in ephemeral containers of the stack image.
//
// Build takes the per-formation build lock (a second push of the same
// formation waits and says so) and one of MaxParallel build slots, then:
//
//  1. reads and parses the commit's Procfile, if any (an invalid one fails
//     the build before anything runs), and decides how to build:
//     BUILDPACK_URL in the formation's config names the one buildpack to
//     run; else a .buildpacks file in the app lists several, run in order
//     (as heroku-buildpack-multi does: each that detects the app compiles,
//     may leave an `export` file for the next ones, and the last bin/release
//     names the default process types); else a Dockerfile is built by the
//     Docker engine; else the bundled buildpacks are tried in order and the
//     first whose bin/detect matches builds the app. A buildpack is a git
//     URL (cloned inside the build container, optionally URL#ref) or a
//     bundled buildpack's name (python, go, static, procfile); BUILDPACK_URL
//     may also name a directory on the coordinator under one of
//     Config.BuildpackDirs (--buildpack-dir; its real path is checked, and
//     it is mounted read-only). .buildpacks, which the pusher writes, never
//     names a path;
//  2. for buildpacks: starts a container of the stack image that idles as
//     the formation's own uid and gid (state.Formation.AppUID, the uid its
//     apps run as; it has no passwd entry, so HOME=/tmp, USER and LOGNAME
//     u<uid> stand in for one), and Docker.Exec runs everything in it as
//     that uid too: no capabilities, no-new-privileges, a read-only root file system, pids,
//     memory and CPU limits, Config.Network, and as its only writable space
//     a tmpfs at /tmp of Config.BuildDisk bytes. `git archive` of the
//     commit is streamed into /tmp/build and the formation's cache tarball
//     (DataDir/cache/<formation>/cache.tar, never extracted on the host)
//     into /tmp/cache, both by tar inside the container. The bundled
//     buildpacks, the config as one file per variable (ENV_DIR), the
//     instructions and the coordinator's Go toolchain (GoRoot, at /opt/go)
//     are mounted read-only. Inside, build.sh runs bin/detect, `bin/compile
//     BUILD_DIR CACHE_DIR ENV_DIR` and bin/release (Heroku's buildpack API)
//     and tars the app directory into /tmp/out/slug.tgz. The outputs come
//     out as tar streams made inside the container: only regular files are
//     accepted (a symlink, FIFO, device or directory fails the build), the
//     small ones within 64 KiB, the slug within MaxSlugBytes while it
//     streams into the slug store. On the way, in the same pass,
//     slugtar.Check reads the slug as the nodes will extract it: a slug
//     that expands past slugtar.ExpandFactor times MaxSlugBytes, has more
//     than MaxSlugEntries entries, or holds a device, FIFO or a path
//     outside the slug fails the build with the reason the nodes would
//     give, and the store keeps nothing of it. Then /tmp/cache goes back
//     into the cache tarball (dropped, with a warning, past BuildDisk).
//     Every step runs under the build's time limit;
//  3. for a Dockerfile: builds the commit as the build context (never
//     pulling: FROM must name an image the engine has; on Config.Network,
//     with the build's memory and CPU limits, the only ones the engine's
//     build API takes), tags the image
//     deis/app-<formation>:<image id>, takes the process types from the
//     Procfile or else "web" from the image's ENTRYPOINT and CMD, and stores
//     `docker save` of the image, gzipped, in the slug store
//     (Build.ImageArchive), for nodes whose engine lacks the image. It
//     looks for an executable /bin/sh in the image (the engine's stat of
//     the path, through its symlinks, in a container of the image that is
//     never started) and records its absence (Build.NoShell): such an
//     image's Procfile commands run directly, split into words, and one
//     that needs a shell (launcher.NeedsShell) fails the build ("the image
//     has no /bin/sh, so the Procfile's web command cannot use shell
//     syntax (&&): use the exec form ..."). Without a Procfile, web runs
//     the image's own ENTRYPOINT and CMD, unwrapped (Build.ImageCommand);
//  4. streams all output line by line to the pusher and to
//     DataDir/builds/<formation>/<build id>.log, enforcing Timeout, and
//     always removes its containers;
//  5. runs the release phase: a "release" process type runs once, in a
//     container of the new build with the formation's config, the way the
//     agent runs processes (slug read-only at /app, .profile.d sourced, PORT
//     set, as the formation's uid), hardened and limited like a build container (writable /tmp
//     only); if it exits non-zero the push fails and nothing is released.
//     The "release" type stays in Build.ProcessTypes; the scheduler must
//     never run it as a process;
//  6. with Config.Replicas, records the slug (or image archive) as held by
//     this coordinator as soon as it is stored, and before writing the
//     release waits until a second running coordinator holds it
//     (Replicas.AwaitCopies, at most ReplicaTimeout; with no other
//     coordinator running it does not wait). When none stores it in time
//     the build fails and nothing is released. Then it writes the build
//     and release N+1 in one transaction guarded by the config key, so a
//     concurrent config:set is never lost;
//  7. with Config.Watcher, after releasing the lock and the build slot,
//     waits for release N+1 to go live, woken by etcd watches only
//     (awaitRollout): it prints each container that becomes ready and the
//     proxies that switched, then "vN is live (1.4s)". When the scheduler
//     marks the release failed, or it is not live within BootTimeout and a
//     margin, the build answers with a *RolloutError ("v3 failed: web
//     containers not ready within 1m0s: ...: the push is refused and the
//     branch not updated ..."), so the hook fails and git keeps the branch.
//     NoPushWait, or DEPLOY_WAIT=false in the release's config, skips it.
//
// The bundled buildpacks live in buildpacks/NN-name (python, go, static,
// procfile; see each README) and are embedded in the binary; New extracts
// them to DataDir/buildpacks. They work without network.
//
// GC (run every interval by RunGC) removes the slugs, the image archives and
// the deis/app-* images that neither the KeepReleases newest releases of an
// existing formation nor any runtime databag refer to, and the build caches
// of deleted formations. A slug goes with all its holder keys
// (state.Keys.SlugHolders), deleted first and only if no coordinator
// recorded it since GC read the references; with Replicas set, a slug file
// younger than Timeout plus ReplicaTimeout is kept (another coordinator's
// build may be waiting for this copy). It never runs while a build is between making its
// slug or image and writing its release (ErrBuildsRunning).
//
// Purge (run by RunPurge on every formation or runtime change and every
// interval) removes what destroyed formations left on this coordinator: the
// git repository, build logs and build cache of every formation that no
// longer exists, or exists as a newer incarnation (the CreateRevision
// recorded in DataDir/incarnations), under the formation's build lock and
// following no symlink; the etcd keys written about it after the destroy
// (state.Store.PurgeFormationKeys); then, through GC, its slugs and images.
// Purge and GC remove nothing when the data directory was used with another
// installation (ErrOtherInstallation). Claim does a purge's work for one
// formation at once, for the incarnation a caller has just read: the git
// server calls it before every session, so that the new owner of a name
// never clones what the previous one left, even before the next pass.
//
// A build request carries the incarnation its push was accepted for
// (Request.Incarnation); the build checks it under the formation's lock
// and releases and records nothing into a formation destroyed and created
// again meanwhile ("formation F was destroyed and created again meanwhile:
// nothing released into the new formation").
//
// Handler serves builds as a plain-text streaming HTTP API for the git
// pre-receive hook (see RequestBuild and ListenUnix).
//
// Errors from Build carry the "builder:" prefix and are written for the
// pusher: an invalid Procfile (with its line), an unusable BUILDPACK_URL or
// .buildpacks line (a local path not allowed), no buildpack for the app, an
// output that is not a regular file, a full disk ("ran out of its 2.0GB of
// disk (--build-disk)"), a failed compile (with the
// buildpack's reason, e.g. "pip install failed: no network?"), a failed
// docker build, a failed release command ("release command failed (exit
// N)"), the time limit (TimeLimitError), the slug size limit, a slug the
// nodes would refuse to extract ("the slug expands past 8.0GB (8x
// --max-slug-bytes): refusing it", "the slug has more than 200000 entries
// (--max-slug-entries): refusing it"), or a
// formation that does not exist. A failed build releases nothing: it is
// recorded at Keys.Build(formation, id) as a state.Build with Failed set,
// Error giving the reason and no slug, image or process types, so that
// deisctl lists it and finds its log (unless the formation does not exist).
package builder
