// Package runtime is the agent's runtime role: it runs, on this node, the
// containers the coordinator assigned to it in the node's runtime databag
// (state.Runtime at Keys.Runtime(node)) and reports what runs in the node's
// status (state.NodeStatus at Keys.NodeStatus(node)).
//
// Use it by building a Config and calling Run:
//
//	docker, err := runtime.NewDocker(ctx)
//	rt, err := runtime.New(runtime.Config{Node: "n1", Addr: "127.0.0.1",
//		StateDir: dir, Store: store, Watcher: cli, Docker: docker, ...})
//	err = rt.Run(ctx) // blocks until ctx ends; containers keep running
//
// # Reconciling
//
// Run is a level-triggered loop. A watch on the databag, Docker events for
// the containers labelled deis.node=<node>, and a jittered periodic resync
// only wake it; each pass reads the whole databag and lists every Docker
// container labelled for this node, and the pure function plan turns the
// difference into tasks, each with a reason ("container hello.v3.web.1
// missing", "container hello.v2.web.1 no longer assigned").
//
// Each assigned container has its own worker goroutine that keeps only the
// latest task, starts the container (downloading its slug first) and probes
// it, so a slow start of one formation never blocks another. A Docker event
// that changes how a container is (die, start, restart, oom, pause,
// unpause, health_status) also goes straight to the worker of its spec
// (label deis.name), which inspects the container at once: a crash, its
// restart count and its exit code are in the node status within moments,
// even when a listing would show the container "running" as before. The
// resync (Config.Resync, 10s) stays the safety net for a lost event. Unassigned
// containers are stopped in the background (SIGTERM, then SIGKILL after
// Config.StopGrace) and removed; they are reported as "stopping" meanwhile.
// Before a container is removed (stopped, or replaced after it exited) its
// last lines are kept in memory per formation (Config.RetiredLines and
// RetiredBytes: 1,000 lines, 256 KiB); RetiredLines returns them to the
// agent API, the node status lists the formations that have some
// (NodeStatus.RetiredLogs), and a formation that no longer exists loses
// them.
//
// Containers labelled deis.oneoff (deisctl run's, which agent/api starts
// with OneOffConfig) are not the loop's: it neither adopts nor stops them,
// and their events do not wake it.
//
// Containers are named "deis-<node>-<spec name>" and carry the labels
// deis.formation, deis.release, deis.type, deis.index, deis.node, deis.name
// and deis.spec (a hash of the spec, without its slug URL and uid, and of
// the node address), and deis.confinement (see Confinement). A running container whose name and labels match its spec is
// adopted, never restarted, so restarting the agent restarts no app. One
// whose spec changed, or that exited, is removed and created again.
//
// # Slugs
//
// A spec with a slug runs the stack image as its formation's own uid and
// gid (state.AppUID: allocated when the formation was created, read from
// the formation record when the spec lacks it; never root, never a host
// account's, never another formation's), with the slug, extracted once per
// node under StateDir/slugs/<sha256>/ (0700: no host account reads it),
// bind-mounted read-only at /app. Extraction makes the slug readable and
// runnable by every uid and writable by none, and refuses a slug that
// expands past Config.MaxSlugBytes times slugtar.ExpandFactor or has more
// than Config.MaxSlugEntries entries; the refusal is the container's status
// reason, and the slug is not downloaded again until the agent restarts. The download is verified against the spec's sha256 and
// shared by every container that needs it at the same time; a failed one is
// retried with backoff; downloads present the node's certificate
// (Config.SlugTLS), which the slug servers require. The process runs as `bash -c "$DEIS_COMMAND"` after
// sourcing /app/.profile.d/*.sh, with HOME=/app, PORT and DYNO=<type>.<index>
// set. A spec without a slug (an image built from a Dockerfile) runs its
// image as the image's user, in its working directory, without a mount:
// with the image's ENTRYPOINT and CMD when the spec has no command,
// otherwise with `/bin/sh -c "$DEIS_COMMAND"` (images may lack bash) after
// sourcing /app/.profile.d/*.sh if the image has that directory.
//
// Such an image exists only on the coordinator's engine; the spec then names
// its `docker save` (ImageArchive, in the slug store, at ImageArchiveURL).
// When the engine lacks the image, the agent downloads the archive (with
// the same token, sha256 check, single shared download and backoff as a
// slug), loads it with ImageLoad (no extraction) and removes the file.
//
// Slug lets the agent's other parts use the slug cache; OneOffConfig
// builds the Docker configuration of a one-off container.
//
// # Confinement
//
// Every app container, scheduled or one-off, slug or image, is created by
// one function (containerConfig) and confined the same way: every
// capability dropped, no-new-privileges, at most Config.PidsLimit processes
// (DefaultPidsLimit, 256), the process type's memory limit or else
// Config.DefaultMemory (DefaultMemoryBytes, 512MiB), a json-file log
// rotated at 3 files of 10MB, and a read-only root file system with a
// 256MB tmpfs at /tmp (HOME=/app is read-only too, as on Heroku). It joins
// Config.Network (the engine's default bridge when ""), and its port is
// published on Config.Addr either way, at an explicit host port chosen from
// Config.PortRange (DefaultPortRange, 20000-29999) that no container of the
// platform holds and that can be bound now, recorded in the label
// deis.hostport: Docker binds the same port whenever it starts the
// container again, after a dockerd restart too. A port Docker finds taken
// is given up for another; none left is a start error. The label deis.confinement hashes
// the network, the default limits, the uid and the confinement's version.
// A running container created under other settings (an upgraded agent, a
// new flag) is adopted, not replaced, since that would interrupt the app;
// its status reason says that deisctl ps:restart replaces it without
// downtime. A container created for any other reason (a deploy, a scale,
// a restart, a crash) gets the current settings.
//
// # Network sandboxes
//
// Docker spends most of a container's start on its network: a namespace,
// an interface on the bridge, the embedded DNS resolver (a re-exec of
// dockerd and a dozen iptables calls in the namespace) and the port
// mapping; four containers starting at once on a two-core node took about
// 0.9s, and only 0.2s when their network already existed. With
// Config.SpareSandboxes (deis-agent --spare-sandboxes, 2 by default) the
// runtime keeps that many spare sandboxes started: containers of
// Config.SandboxImage that only run `sleep infinity` as nobody, with no
// capabilities, no-new-privileges, a read-only root, 8 pids and 16MiB, on
// Config.Network, with port 5000 (state.DefaultContainerPort, every web
// process's) published on Config.Addr at a port chosen as for a container
// (labels deis.node, deis.sandbox=1, deis.hostport). A container whose spec
// has that port takes a spare, if there is one, and joins its network
// namespace (NetworkMode container:<id>, label deis.sandbox.id, and the
// sandbox's deis.hostport as its own): Docker then starts only the
// container. Without a spare it is created on Config.Network as before.
// Either way it is confined the same; the sandbox is its network.
//
// A sandbox serves one container, once: it is removed with the container
// (stopped, replaced, or gone behind the agent's back), never handed to
// another. The spares are refilled 1.5s after the last one was taken, so
// that refilling never competes with a rollout's starts, and every resync
// removes the node's sandboxes that no container joined and that are not
// spare (a Runtime removes the spares of an earlier one, which it cannot
// tell from used ones). A container whose sandbox is gone (removed by
// hand: the container lost its port) is removed, so the next pass starts
// it again; a sandbox's Docker events wake that check. After a dockerd
// restart Docker starts each sandbox before the container that joined it
// (restart policy unless-stopped on both), on the same host port.
//
// # Readiness
//
// A started container is "running"; it becomes "ready" once it answers:
// when the spec has a HealthPath, an HTTP GET of its published port
// answered with 2xx or 3xx; otherwise a TCP connection to the container's
// own address (its sandbox's) and port accepted (the host reaches its
// containers, as Docker's port proxy does; a refusal means nothing listens
// yet), or, when
// that address cannot be reached from the agent, a connection to the
// published port that the container keeps open for 300ms (Docker's port
// proxy accepts connections even when nothing listens, and closes them at
// once). A started container is probed again after 25ms, then at growing
// intervals up to 50ms until it is first ready, and the status is
// written at once on every change. Ready containers are probed again every few seconds; three
// failures in a row make them "running" again.
//
// # Errors
//
// New returns an error for an incomplete Config or metrics that cannot be
// registered. Run returns nil when its context ends; every other failure
// (etcd or Docker unreachable, a slug that does not verify, an image that is
// missing) is logged, reported in the node status with what to do, and
// retried with backoff.
package runtime
