#!/bin/bash
# The builder runs this script in an ephemeral container of the stack image,
# as the formation's own uid (which has no passwd entry: HOME, USER and
# LOGNAME stand in for one), with a read-only root file system and no
# capabilities. /tmp is the build's only writable space (a tmpfs of
# --build-disk bytes): the builder copies the pushed commit into /tmp/build
# and the formation's build cache into /tmp/cache, and after the build
# copies the results out of /tmp/out (regular files only). The bundled
# buildpacks are mounted read-only at /buildpacks, the formation's config as
# one file per variable at /env (Heroku's ENV_DIR) and the builder's
# instructions at /in:
#   /in/mode          detect (try the bundled buildpacks in order), single
#                     (BUILDPACK_URL: that buildpack must detect the app) or
#                     multi (.buildpacks: run each that detects, in order)
#   /in/buildpacks    for single and multi, one "LABEL<TAB>LOCATION" per
#                     line: a directory (bundled, or mounted from the
#                     coordinator under /buildpacks-custom) or a git URL,
#                     optionally with #REF, to clone
#   /tmp/out/buildpack    the names of the buildpacks that built the app
#   /tmp/out/release.yml  bin/release of the last buildpack that has one
#   /tmp/out/slug.tgz     the built app directory
#   /tmp/out/failure      why the build failed, in one line
set -o pipefail
export LC_ALL=C
build=/tmp/build cache=/tmp/cache env=/env out=/tmp/out
export GIT_TERMINAL_PROMPT=0 HOME=${HOME:-/tmp}
mkdir -p "$cache" "$out"
# A buildpack whose bin/compile fails may write the reason, in one line, to
# this file (a Deis extension; the output above it still tells the story).
export DEIS_BUILD_FAILURE=/tmp/deis-build-failure

fail() {
	echo " !     $*"
	printf '%s\n' "$*" >"$out/failure"
	exit 1
}

indent() { sed -u 's/^/       /'; }

# fetch LABEL URL DIR clones a buildpack's git repository (URL#REF checks
# out REF).
fetch() {
	local label=$1 url=${2%%#*} ref= dir=$3
	[ "$url" != "$2" ] && ref=${2#*#}
	echo "-----> Fetching buildpack $label"
	git clone --quiet --recurse-submodules -- "$url" "$dir" </dev/null 2>&1 | indent ||
		fail "could not clone the buildpack $label: check the URL and that the build container can reach it"
	if [ -n "$ref" ]; then
		git -C "$dir" checkout --quiet "$ref" -- </dev/null 2>&1 | indent ||
			fail "the buildpack $label has no ref $ref"
	fi
}

[ -d "$build" ] || fail "the pushed commit has no files"
cd "$build" || fail "cannot enter the build directory"

mode=$(cat /in/mode 2>/dev/null)
bps=() labels=() names=()
case $mode in
single | multi)
	i=0
	while IFS=$'\t' read -r label loc; do
		[ -n "$loc" ] || continue
		dir=$loc
		case $loc in
		/*) ;;
		*)
			dir=/tmp/buildpacks/$i
			fetch "$label" "$loc" "$dir"
			;;
		esac
		[ -x "$dir/bin/compile" ] || fail "$label is not a buildpack: it has no executable bin/compile"
		bps+=("$dir") labels+=("$label") names+=("")
		i=$((i + 1))
	done </in/buildpacks
	[ ${#bps[@]} -gt 0 ] || fail "no buildpack to run: .buildpacks lists none"
	;;
*)
	for bp in /buildpacks/*/; do
		bp=${bp%/}
		[ -x "$bp/bin/detect" ] || continue
		if name=$("$bp/bin/detect" "$build" 2>/tmp/detect.err); then
			bps=("$bp") labels=("$(basename "$bp")") names=("$name")
			break
		fi
		# A buildpack that recognized the app but cannot build it says why.
		[ -s /tmp/detect.err ] && sed 's/^/ !     /' /tmp/detect.err
	done
	[ ${#bps[@]} -gt 0 ] || fail "no buildpack supports this app: add a Procfile such as \"web: python3 server.py\" to the root of the repository"
	;;
esac

ran=()
for i in "${!bps[@]}"; do
	bp=${bps[$i]} label=${labels[$i]} name=${names[$i]}
	if [ -z "$name" ]; then
		if [ ! -x "$bp/bin/detect" ]; then
			name=$label
		elif ! name=$("$bp/bin/detect" "$build" 2>/tmp/detect.err); then
			[ -s /tmp/detect.err ] && sed 's/^/ !     /' /tmp/detect.err
			[ "$mode" = multi ] || fail "the buildpack $label does not support this app (its bin/detect failed)"
			echo "-----> Skipping $label: its bin/detect does not match this app"
			continue
		fi
	fi
	name=$(printf '%s\n' "$name" | head -n1)
	[ -n "$name" ] || name=$label
	echo "-----> $name app detected"
	rm -f "$DEIS_BUILD_FAILURE"
	"$bp/bin/compile" "$build" "$cache" "$env"
	status=$?
	if [ $status -ne 0 ]; then
		why=$(head -n1 "$DEIS_BUILD_FAILURE" 2>/dev/null)
		fail "${why:-the $name buildpack failed to compile the app (bin/compile exited with status $status)}"
	fi
	# As heroku-buildpack-multi does: a buildpack may leave an environment
	# for the ones after it.
	if [ -f "$bp/export" ]; then
		# shellcheck disable=SC1091
		. "$bp/export"
	fi
	if [ -x "$bp/bin/release" ]; then
		"$bp/bin/release" "$build" >"$out/release.yml.new" || fail "the $name buildpack failed to describe the release (bin/release exited with status $?)"
		mv "$out/release.yml.new" "$out/release.yml"
	fi
	ran+=("$name")
done
[ ${#ran[@]} -gt 0 ] || fail "none of the buildpacks in .buildpacks supports this app"
(
	IFS=,
	printf '%s\n' "${ran[*]}" | sed 's/,/, /g'
) >"$out/buildpack"

tar czf "$out/slug.tgz" -C "$build" . || fail "could not compress the app into a slug (tar exited with status $?)"
