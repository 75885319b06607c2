#!/usr/bin/env bash
# mkimage.sh builds the stack image that builds and runs every slug.
#
# No registry can be reached from the machines this platform targets, so the
# image is made from Debian's own packages with debootstrap and imported into
# the local Docker engine. It runs once; later calls see the image and exit.
#
#   usage: mkimage.sh [IMAGE]      (default deis/stack:bookworm)
#   env:   DEIS_STACK_MIRROR  a Debian mirror (default: the one apt uses)
#          DEIS_STACK_FORCE=1 rebuild even when the image exists
set -euo pipefail

image=${1:-deis/stack:bookworm}
if [ "${DEIS_STACK_FORCE:-}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
	echo "stack: $image already present"
	exit 0
fi

mirror=${DEIS_STACK_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
		grep -v security | head -n1 | awk '{print $2}' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { echo "stack: debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

root=$(mktemp -d /var/tmp/deis-stack.XXXXXX)
trap 'rm -rf "$root"' EXIT

# The packages a Heroku-style stack offers to buildpacks and apps: a shell and
# core tools, Python's standard library, TLS roots and curl for buildpacks
# that download, git for buildpacks fetched by URL.
pkgs=bash,coreutils,ca-certificates,curl,git,gzip,tar,procps,python3,python3-venv,python3-pip

echo "stack: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" |
	while IFS= read -r line; do case "$line" in I:\ Retrieving*|I:\ Validating*) ;; *) echo "stack: $line" ;; esac; done

# Slugs run as an unprivileged user, as on Heroku.
chroot "$root" /usr/sbin/useradd --uid 1000 --create-home --home-dir /home/app --shell /bin/bash app
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

echo "stack: importing into docker as $image"
tar -C "$root" -c . | docker import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'WORKDIR /app' \
	- "$image" >/dev/null
echo "stack: $image ready"
