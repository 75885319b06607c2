#!/usr/bin/env bash
# run.sh runs the whole platform on this machine in the foreground: an
# embedded etcd inside the coordinator, the coordinator, and one agent with
# both the runtime and the proxy role. Ctrl-C stops the platform processes;
# app containers and the proxy's nginx keep serving, and the next run adopts
# them.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
data=${DEIS_LOCAL_DATA:-$top/.data}
mkdir -p "$data"

"$top/bin/deis-coordinator" --data-dir "$data/coordinator" 2> >(sed -u 's/^/coordinator | /' >&2) &
coord=$!
for _ in $(seq 1 60); do
	curl -fsS http://127.0.0.1:8090/healthz >/dev/null 2>&1 && break
	kill -0 $coord 2>/dev/null || { echo "run: the coordinator exited; see its log above" >&2; exit 1; }
	sleep 1
done
"$top/bin/deis-agent" --name local --state-dir "$data/agent" 2> >(sed -u 's/^/agent       | /' >&2) &
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
