#!/bin/bash
# The builder runs this script in an ephemeral container of the stack image.
# The pushed commit is in /tmp/build; the buildpacks are mounted read-only at
# /buildpacks, the formation's build cache at /cache, its config as one file
# per variable at /env (Heroku's ENV_DIR) and the results go to /out:
#   /out/buildpack    name printed by the buildpack that detected the app
#   /out/release.yml  output of bin/release
#   /out/slug.tgz     the built app directory
#   /out/failure      why the build failed, in one line
set -o pipefail
export LC_ALL=C
build=/tmp/build cache=/cache env=/env out=/out

fail() {
	echo " !     $*"
	printf '%s\n' "$*" >"$out/failure"
	exit 1
}

[ -d "$build" ] || fail "the pushed commit has no files"
cd "$build" || fail "cannot enter the build directory"

selected= name=
for bp in /buildpacks/*/; do
	bp=${bp%/}
	[ -x "$bp/bin/detect" ] || continue
	if name=$("$bp/bin/detect" "$build" 2>/dev/null); then
		selected=$bp
		break
	fi
done
[ -n "$selected" ] || fail "no buildpack supports this app: add a Procfile such as \"web: python3 server.py\" to the root of the repository"
name=$(printf '%s\n' "$name" | head -n1)
[ -n "$name" ] || name=$(basename "$selected")
echo "-----> $name app detected"
printf '%s\n' "$name" >"$out/buildpack"

"$selected/bin/compile" "$build" "$cache" "$env" || fail "the $name buildpack failed to compile the app (bin/compile exited with status $?)"
if [ -x "$selected/bin/release" ]; then
	"$selected/bin/release" "$build" >"$out/release.yml" || fail "the $name buildpack failed to describe the release (bin/release exited with status $?)"
fi
tar czf "$out/slug.tgz" -C "$build" . || fail "could not compress the app into a slug (tar exited with status $?)"
