#!/bin/sh
# Builds the release assets of stigmer for this machine's platform.
#
#   packaging/release.sh VERSION [OUTDIR]
#
# VERSION is X.Y.Z (a leading v is dropped). OUTDIR (default dist/) gets:
#
#   stigmer-VERSION-OS-ARCH.tar.gz          stigmer, README.md, LICENSE,
#                                           stigmer.1, completions/, units/
#   stigmer-VERSION-OS-ARCH.tar.gz.sha256
#   agent-runner-VERSION-OS-ARCH            the standalone agent-runner
#   agent-runner-VERSION-OS-ARCH.sha256     "<hex>  <name>\n"
#
# and, when STIGMER_SIGNING_KEY names the PEM file of an ECDSA P-256 private
# key, a .sig next to each of the two assets: the DER signature over the
# SHA-256 of the file (openssl dgst -sha256 -sign), which
# `[agent-runner] public_key` makes the fetch verify.
#
# The build is a fresh one in a temporary directory, Release, stripped,
# with mbedTLS and curl static (always) and libuv, inih, jansson and SQLite
# from their static archives where the system has them (the script says
# which it could not). The stigmer binary embeds exactly the agent-runner
# asset. Reproducible: the same sources and VERSION give the same bytes
# (SOURCE_DATE_EPOCH from the last commit, build paths mapped away, sorted
# tar entries with fixed owners, modes and times, gzip -n). ECDSA signatures
# are randomised, so the .sig files differ from run to run; they verify.
#
# Environment: STIGMER_SIGNING_KEY (above), SOURCE_DATE_EPOCH (default: the
# last commit's time), JOBS (default 2), STIGMER_CMAKE_ARGS (more CMake
# arguments, word-split: what packaging/deps-macos.sh prints).
set -eu

say() { printf 'release: %s\n' "$*" >&2; }
die() { printf 'release: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: packaging/release.sh VERSION [OUTDIR]"
v=${1#v}
printf '%s\n' "$v" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?$' ||
	die "VERSION: expected X.Y.Z or X.Y.Z-rcN, got '$1'"

src=$(cd "$(dirname "$0")/.." && pwd -P)
out=${2:-$src/dist}
jobs=${JOBS:-2}

case $(uname -s) in
Linux) os=linux ;;
Darwin) os=darwin ;;
*) die "unsupported OS $(uname -s)" ;;
esac
case $(uname -m) in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) die "unsupported architecture $(uname -m)" ;;
esac
plat=$os-$arch

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$src" log -1 --format=%ct 2>/dev/null) ||
		die "SOURCE_DATE_EPOCH is unset and $src is not a git checkout"
fi
export SOURCE_DATE_EPOCH
export TZ=UTC LC_ALL=C
umask 022

if [ -n "${STIGMER_SIGNING_KEY:-}" ]; then
	[ -r "$STIGMER_SIGNING_KEY" ] || die "STIGMER_SIGNING_KEY: cannot read $STIGMER_SIGNING_KEY"
	command -v openssl >/dev/null || die "openssl is needed to sign"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/stigmer-release.XXXXXX")
work=$(cd "$work" && pwd -P)
[ -n "${STIGMER_RELEASE_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT INT TERM
build=$work/build
stage=$work/stage

# No build path may reach the binary: map the source and build trees.
cflags="-ffile-prefix-map=$src=. -ffile-prefix-map=$work=."
ar_name=agent-runner-$v-$plat
tar_base=stigmer-$v-$plat

# 1. The agent-runner: built, stripped, kept as the asset.
say "building $ar_name (sources $src, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH)"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	-DSTIGMER_VERSION="$v" -DSTIGMER_STATIC_DEPS=ON -DSTIGMER_WERROR=OFF \
	-DCMAKE_C_FLAGS="$cflags" -DSTIGMER_AGENT_RUNNER=reference ${STIGMER_CMAKE_ARGS:-} \
	>"$work/cmake.log" 2>&1 ||
	{ cat "$work/cmake.log" >&2; die "cmake failed"; }
grep '^CMake Warning' -A2 "$work/cmake.log" | grep 'static:' | sed 's/^ */release: warning: /' >&2 || true
cmake --build "$build" -j "$jobs" --target agent-runner >"$work/build.log" 2>&1 ||
	{ tail -n 40 "$work/build.log" >&2; die "building the agent-runner failed"; }
mkdir -p "$stage"
cp "$build/agent-runner" "$stage/$ar_name"
strip "$stage/$ar_name"

# 2. stigmer, embedding that very file.
say "building stigmer $v embedding $ar_name"
cmake -S "$src" -B "$build" -DSTIGMER_AGENT_RUNNER="$stage/$ar_name" >>"$work/cmake.log" 2>&1 ||
	{ cat "$work/cmake.log" >&2; die "cmake failed"; }
cmake --build "$build" -j "$jobs" --target stigmer >>"$work/build.log" 2>&1 ||
	{ tail -n 40 "$work/build.log" >&2; die "building stigmer failed"; }
cp "$build/stigmer" "$stage/stigmer"
strip "$stage/stigmer"
got=$("$stage/stigmer" version | sed -n '1s/^stigmer //p')
[ "$got" = "$v" ] || die "the binary reports version '$got', not '$v'"
if [ "$os" = linux ]; then
	dyn=$(ldd "$stage/stigmer" 2>/dev/null | grep -Eo 'lib(uv|inih|jansson|sqlite3)[^ ]*\.so[^ ]*' | sort -u | tr '\n' ' ')
	[ -z "$dyn" ] || say "warning: linked dynamically (no static archive): $dyn"
fi

# 3. The tarball.
t=$stage/$tar_base
mkdir -p "$t/completions" "$t/units/systemd" "$t/units/launchd"
cp "$stage/stigmer" "$t/stigmer"
if [ -f "$src/README.md" ]; then
	cp "$src/README.md" "$t/README.md"
else
	say "warning: the tree has no README.md; the tarball has none"
fi
cp "$src/LICENSE" "$t/LICENSE"
cp "$src/packaging/man/stigmer.1" "$t/stigmer.1"
cp "$src/packaging/completions/stigmer.bash" "$src/packaging/completions/_stigmer" \
	"$src/packaging/completions/stigmer.fish" "$t/completions/"
cp "$src/packaging/systemd/stigmer.service" "$src/packaging/systemd/stigmer-system.service" \
	"$src/packaging/systemd/stigmer.sysusers" "$t/units/systemd/"
cp "$src/packaging/launchd/dev.stigmer.daemon.plist" "$t/units/launchd/"
find "$t" -type d -exec chmod 0755 {} +
find "$t" -type f -exec chmod 0644 {} +
chmod 0755 "$t/stigmer"
chmod 0755 "$stage/$ar_name"
if touch --version >/dev/null 2>&1; then
	find "$t" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
else
	find "$t" -exec touch -h -t "$(date -u -r "$SOURCE_DATE_EPOCH" +%Y%m%d%H%M.%S)" {} +
fi

mkdir -p "$out"
out=$(cd "$out" && pwd -P)
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
	(cd "$stage" && tar --sort=name --format=ustar --owner=0 --group=0 --numeric-owner \
		--mtime="@$SOURCE_DATE_EPOCH" -cf - "$tar_base") | gzip -n -9 >"$out/$tar_base.tar.gz"
else
	# bsdtar (macOS): no --sort, so the names are sorted here.
	(cd "$stage" && find "$tar_base" | sort | tar --uid 0 --gid 0 --uname '' --gname '' \
		--format ustar -n -cf - -T -) | gzip -n -9 >"$out/$tar_base.tar.gz"
fi
cp "$stage/$ar_name" "$out/$ar_name"

# 4. Checksums and signatures.
sha256() {
	if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
for a in "$tar_base.tar.gz" "$ar_name"; do
	printf '%s  %s\n' "$(sha256 "$out/$a")" "$a" >"$out/$a.sha256"
	rm -f "$out/$a.sig"
	if [ -n "${STIGMER_SIGNING_KEY:-}" ]; then
		openssl dgst -sha256 -sign "$STIGMER_SIGNING_KEY" -out "$out/$a.sig" "$out/$a"
	fi
done
say "wrote to $out:"
for a in "$tar_base.tar.gz" "$ar_name"; do
	for f in "$a" "$a.sha256" "$a.sig"; do
		[ -f "$out/$f" ] && printf '  %s\n' "$f" >&2
	done
done
exit 0
