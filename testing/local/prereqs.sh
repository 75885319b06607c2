#!/usr/bin/env bash
# prereqs.sh installs what the platform and its tests need on Debian (Docker
# engine, Nginx, git, debootstrap, and the Prometheus server the metrics test
# starts), starts dockerd when it is not running, and builds the stack image
# the first time. It is idempotent: what is already there is left alone.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
# ngx.ssl (certificates by SNI) and ngx.balancer come with lua-resty-core.
[ -e /usr/share/lua/5.1/ngx/ssl.lua ] || need+=(lua-resty-core)
command -v git >/dev/null || need+=(git)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ssh >/dev/null || need+=(openssh-client)
command -v prometheus >/dev/null || need+=(prometheus)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "prereqs: missing ${need[*]}; run as root to install them" >&2
		exit 1
	fi
	echo "prereqs: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q "${need[@]}" >/dev/null
fi

if ! docker version >/dev/null 2>&1; then
	echo "prereqs: starting dockerd (log: /var/log/deis-dockerd.log)"
	# In its own session, so Ctrl-C in this terminal (make run) stops only
	# the platform, never the engine and the apps.
	setsid nohup dockerd </dev/null >/var/log/deis-dockerd.log 2>&1 &
	for _ in $(seq 1 60); do
		docker version >/dev/null 2>&1 && break
		sleep 1
	done
	docker version >/dev/null 2>&1 || { echo "prereqs: dockerd did not start; see /var/log/deis-dockerd.log" >&2; exit 1; }
fi

"$(dirname "$0")/../../coordinator/stack/mkimage.sh"
