package launcher

// Slug runs a process of a slug mounted at /app, as the argument of
// `/bin/bash -c`: it sources the buildpacks' .profile.d scripts and then
// replaces itself by the command.
const Slug = `cd /app || exit 1
for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done
unset f
exec bash -c "$DEIS_COMMAND"`

// Image runs a process of an image built from a Dockerfile, as the argument
// of `/bin/sh -c`: with the image's /bin/sh (images may lack bash), in the
// image's working directory and as its user; it sources /app/.profile.d
// scripts only when the image has them.
const Image = `if [ -d /app/.profile.d ]; then
  for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done
  unset f
fi
exec /bin/sh -c "$DEIS_COMMAND"`
