#!/usr/bin/env bash
# mkimage.sh builds the image the systemd test boots: Debian bookworm with
# systemd as /sbin/init, so that the units in systemd/ run under a real
# systemd (PID 1 of a container) with journald, restarts and kill modes.
#
# Like the stack image it comes from Debian's packages with debootstrap (no
# registry) and is built once; later calls see the image and exit.
#
#   usage: mkimage.sh [IMAGE]      (default deis/systemd-test:bookworm)
#   env:   DEIS_STACK_MIRROR  a Debian mirror (default: the one apt uses)
#          DEIS_SYSTEMD_FORCE=1 rebuild even when the image exists
set -euo pipefail

image=${1:-deis/systemd-test:bookworm}

# systemd and its bus; nginx with its Lua module for the agent's proxy role;
# git for the coordinator; iptables for the network guards (the host's
# backend: bookworm's default, nf_tables); procps for the test. The list is
# kept as a label: an image made from another list is made again.
pkgs=systemd,systemd-sysv,dbus,ca-certificates,iptables,procps,nginx,libnginx-mod-http-lua,git

if [ "${DEIS_SYSTEMD_FORCE:-}" != 1 ] &&
	[ "$(docker image inspect --format '{{index .Config.Labels "deis.packages"}}' "$image" 2>/dev/null)" = "$pkgs" ]; then
	echo "systemd-test: $image already present"
	exit 0
fi

mirror=${DEIS_STACK_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
		grep -v security | head -n1 | awk '{print $2}' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { echo "systemd-test: debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

root=$(mktemp -d /var/tmp/deis-systemd.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "systemd-test: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" |
	while IFS= read -r line; do case "$line" in I:\ Retrieving*|I:\ Validating*) ;; *) echo "systemd-test: $line" ;; esac; done

# What has no place in a container: consoles, hardware and clock setup; and
# the system nginx, which would take port 80 of the host network (the agent
# runs its own nginx master, as docs/operations.md says).
for u in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
	systemd-modules-load.service systemd-timesyncd.service systemd-remount-fs.service \
	sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount \
	systemd-firstboot.service systemd-hwdb-update.service apt-daily.timer apt-daily-upgrade.timer nginx.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
: >"$root/etc/machine-id"

old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
echo "systemd-test: importing into docker as $image"
tar -C "$root" -c . | docker import \
	--change 'ENV container=docker' \
	--change "LABEL deis.packages=$pkgs" \
	--change 'CMD ["/sbin/init"]' \
	- "$image" >/dev/null
# The image this one replaces, unless a container still uses it.
new=$(docker image inspect --format '{{.Id}}' "$image")
[ -z "$old" ] || [ "$old" = "$new" ] || docker rmi "$old" >/dev/null 2>&1 || true
echo "systemd-test: $image ready"
