#!/usr/bin/env bash
# run.sh runs the whole platform on this machine in the foreground: an
# embedded etcd inside the coordinator (TLS, client certificates and auth,
# with the platform CA the coordinator creates in its data directory), the
# coordinator, and one agent with both the runtime and the proxy role. The
# coordinator writes the administrator's credential to ~/.config/deis, which
# deisctl reads without flags; the agent joins with a one-time token the
# first time (deisctl nodes:add) and keeps its credentials in its state
# directory. Ctrl-C stops the platform processes; app containers and the
# proxy's nginx keep serving, and the next run adopts them.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
data=${DEIS_LOCAL_DATA:-$top/.data}
mkdir -p "$data"

"$top/bin/deis-coordinator" --data-dir "$data/coordinator" 2> >(sed -u 's/^/coordinator | /' >&2) &
coord=$!
# The join endpoint answers once etcd is secured and the administrator's
# credential is written.
for _ in $(seq 1 60); do
	curl -fsSk https://127.0.0.1:8091/healthz >/dev/null 2>&1 && break
	kill -0 $coord 2>/dev/null || { echo "run: the coordinator exited; see its log above" >&2; exit 1; }
	sleep 1
done
join=()
if [ ! -f "$data/agent/credentials/client.crt" ]; then
	# deis-agent --name local --join TOKEN --coordinator URL --ca-fingerprint FP
	read -r -a join < <("$top/bin/deisctl" nodes:add local | sed -n 's/^ *deis-agent --name local //p')
	[ ${#join[@]} -gt 0 ] || { echo "run: deisctl nodes:add local failed (see above)" >&2; kill -TERM $coord; exit 1; }
fi
"$top/bin/deis-agent" --name local --state-dir "$data/agent" "${join[@]}" 2> >(sed -u 's/^/agent       | /' >&2) &
agent=$!

stop() {
	echo
	echo "run: stopping the platform (apps keep serving)"
	kill -TERM $agent $coord 2>/dev/null || true
	wait $agent $coord 2>/dev/null || true
	exit 0
}
trap stop INT TERM

cat <<MSG

  The platform is running. In another terminal:

    export PATH=$top/bin:\$PATH
    test -f ~/.ssh/id_ed25519 || ssh-keygen -t ed25519 -N '' -f ~/.ssh/id_ed25519
    deisctl keys:add ~/.ssh/id_ed25519.pub
    deisctl formations:create hello
    cp -r $top/testing/apps/hello /tmp/hello && cd /tmp/hello
    git init -q -b main && git add . && git -c user.name=me -c user.email=me@example.com commit -qm hello
    git remote add deis ssh://git@localhost:2222/hello.git
    GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=accept-new" git push deis main
    curl http://hello.localhost:8080/

  Ctrl-C here stops the platform; running apps keep serving.

MSG
wait $coord $agent
