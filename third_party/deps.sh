#!/bin/sh
# Install and build everything stigmer needs, on Debian 12, as root.
#
#   third_party/deps.sh [--check] [--print-cache]
#
# - Debian packages (libuv, inih, jansson, SQLite, llhttp's C sources, the
#   toolchain) are installed with apt-get when missing.
# - mbedTLS and curl are built static from Debian's source packages of the
#   next release, pinned in third_party/versions.env, fetched with
#   `apt-get source` through the mirror apt is already configured with. The
#   deb-src entry is derived from the machine's own apt sources and kept in a
#   private folder, as are the package lists, so the system's apt setup is
#   left untouched. apt verifies the signed Release file and every hash.
# - Built libraries are cached outside the build directory, keyed by version:
#   $STIGMER_DEPS_CACHE (default /var/cache/stigmer-deps as root,
#   ~/.cache/stigmer-deps otherwise).
#
# A second run with everything present does nothing and says so.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

if [ "$(id -u)" = 0 ]; then
	default_cache=/var/cache/stigmer-deps
else
	default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/stigmer-deps
fi
CACHE=${STIGMER_DEPS_CACHE:-$default_cache}

say() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
--print-cache) printf '%s\n' "$CACHE"; exit 0 ;;
--check) check_only=1 ;;
'') check_only=0 ;;
*) die "usage: deps.sh [--check] [--print-cache]" ;;
esac

# Debian packages: build tools, libraries, and what the tests use
# (systemd: systemd-analyze verify of the units; libxml2-utils: xmllint for
# the launchd plist where python3 is missing; ruby, zsh, fish: syntax checks
# of the Homebrew formula and the completions; curl: the API tests).
PKGS="build-essential cmake pkg-config dpkg-dev git ca-certificates
libuv1-dev libinih-dev libjansson-dev libsqlite3-dev node-llhttp
clang libclang-rt-14-dev procps openssl jq
systemd libxml2-utils ruby zsh fish curl"

missing=
for p in $PKGS; do
	st=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = installed ] || missing="$missing $p"
done

if [ -n "$missing" ]; then
	[ "$check_only" = 0 ] || die "missing Debian packages:$missing"
	[ "$(id -u)" = 0 ] || die "missing Debian packages:$missing (run as root, or install them)"
	say "installing:$missing"
	apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# --- pinned sources ---------------------------------------------------------

have_lib() { # name version
	[ -f "$CACHE/$1-$2/.complete" ]
}

need_build=
have_lib mbedtls "$MBEDTLS_VERSION" || need_build="$need_build mbedtls"
have_lib curl "$CURL_VERSION" || need_build="$need_build curl"

if [ -z "$need_build" ]; then
	[ -n "$missing" ] || say "everything present (cache: $CACHE)"
	exit 0
fi
[ "$check_only" = 0 ] || die "not built yet:$need_build (cache: $CACHE)"

mkdir -p "$CACHE"
APT="$CACHE/apt"
mkdir -p "$APT/sources" "$APT/lists/partial"

# Derive a deb-src entry for the next release from the machine's own apt
# sources: the first URI that serves Debian's main archive, and the first
# that serves its security archive. Both deb822 and one-line formats.
uris=$(
	{
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] && awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f"
		done
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] && awk '$1 == "deb" || $1 == "deb-src" {
				for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$f"
		done
		true
	} 2>/dev/null
)
main_uri=$(printf '%s\n' "$uris" | grep -E '/debian/?$' | head -n1 || true)
sec_uri=$(printf '%s\n' "$uris" | grep -E '/debian-security/?$' | head -n1 || true)
[ -n "$main_uri" ] || die "no Debian archive found in /etc/apt sources; cannot derive a deb-src entry"

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
	printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$main_uri" "$DEB_SRC_SUITES" "$keyring"
	if [ -n "$sec_uri" ]; then
		first_suite=${DEB_SRC_SUITES%% *}
		printf '\nTypes: deb-src\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
			"$sec_uri" "$first_suite" "$keyring"
	fi
} >"$APT/sources/stigmer-src.sources"

aptopts="-o Dir::Etc::SourceParts=$APT/sources -o Dir::Etc::SourceList=/dev/null -o Dir::State::Lists=$APT/lists -o Dir::Cache=$APT/cache -o APT::Sandbox::User=root"
mkdir -p "$APT/cache/archives/partial"
say "updating the private source package lists"
# shellcheck disable=SC2086
apt-get $aptopts -qq update

# pick_version PKG UPSTREAM PINNED: the pinned Debian version when the mirror
# has it, else the newest revision of the same upstream version.
pick_version() {
	# shellcheck disable=SC2086
	avail=$(apt-cache $aptopts showsrc "$1" 2>/dev/null | awk '/^Version:/ { print $2 }')
	if printf '%s\n' "$avail" | grep -qxF "$3"; then
		printf '%s\n' "$3"
		return
	fi
	alt=$(printf '%s\n' "$avail" | grep -E "^$(printf '%s' "$2" | sed 's/\./\\./g')-" | sort -V | tail -n1 || true)
	[ -n "$alt" ] || die "source package $1 $2 not found on the mirror (available: $(echo $avail))"
	say "warning: $1 $3 is gone from the mirror; using $alt (same upstream version)"
	printf '%s\n' "$alt"
}

work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
jobs=$(nproc 2>/dev/null || echo 2)

build_mbedtls() {
	v=$(pick_version mbedtls "$MBEDTLS_VERSION" "$MBEDTLS_DEBIAN_VERSION")
	say "fetching mbedtls $v"
	# shellcheck disable=SC2086
	(cd "$work" && apt-get $aptopts -qq source "mbedtls=$v" >/dev/null)
	src="$work/mbedtls-$MBEDTLS_VERSION"
	[ -d "$src" ] || die "apt-get source mbedtls=$v produced no $src"
	# The same configuration Debian ships (threading on).
	cfg="$src/include/mbedtls/mbedtls_config.h"
	for d in MBEDTLS_THREADING_C MBEDTLS_THREADING_PTHREAD; do
		sed -i "s|^//#define $d\$|#define $d|" "$cfg"
		grep -q "^#define $d\$" "$cfg" || die "cannot enable $d in $cfg"
	done
	prefix="$CACHE/mbedtls-$MBEDTLS_VERSION"
	rm -rf "$prefix"
	say "building mbedtls $v"
	cmake -S "$src" -B "$work/mbedtls-build" -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
		-DCMAKE_POSITION_INDEPENDENT_CODE=ON \
		-DUSE_STATIC_MBEDTLS_LIBRARY=ON -DUSE_SHARED_MBEDTLS_LIBRARY=OFF \
		-DENABLE_PROGRAMS=OFF -DENABLE_TESTING=OFF >/dev/null
	cmake --build "$work/mbedtls-build" -j "$jobs" >/dev/null
	cmake --install "$work/mbedtls-build" >/dev/null
	printf '%s\n' "$v" >"$prefix/.source-version"
	touch "$prefix/.complete"
}

build_curl() {
	v=$(pick_version curl "$CURL_VERSION" "$CURL_DEBIAN_VERSION")
	say "fetching curl $v"
	# shellcheck disable=SC2086
	(cd "$work" && apt-get $aptopts -qq source "curl=$v" >/dev/null)
	src="$work/curl-$CURL_VERSION"
	[ -d "$src" ] || die "apt-get source curl=$v produced no $src"
	prefix="$CACHE/curl-$CURL_VERSION"
	mtls="$CACHE/mbedtls-$MBEDTLS_VERSION"
	rm -rf "$prefix"
	say "building curl $v (static, HTTP/HTTPS only, mbedTLS, threaded resolver)"
	cmake -S "$src" -B "$work/curl-build" -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
		-DCMAKE_POSITION_INDEPENDENT_CODE=ON \
		-DBUILD_SHARED_LIBS=OFF -DBUILD_STATIC_LIBS=ON \
		-DBUILD_CURL_EXE=OFF -DBUILD_TESTING=OFF -DBUILD_LIBCURL_DOCS=OFF \
		-DBUILD_MISC_DOCS=OFF -DENABLE_CURL_MANUAL=OFF -DBUILD_EXAMPLES=OFF \
		-DHTTP_ONLY=ON -DENABLE_THREADED_RESOLVER=ON \
		-DCURL_USE_MBEDTLS=ON -DCURL_USE_OPENSSL=OFF -DCURL_USE_GNUTLS=OFF \
		-DMBEDTLS_INCLUDE_DIR="$mtls/include" \
		-DMBEDTLS_LIBRARY="$mtls/lib/libmbedtls.a" \
		-DMBEDX509_LIBRARY="$mtls/lib/libmbedx509.a" \
		-DMBEDCRYPTO_LIBRARY="$mtls/lib/libmbedcrypto.a" \
		-DCURL_USE_LIBPSL=OFF -DCURL_USE_LIBSSH2=OFF -DCURL_USE_LIBSSH=OFF \
		-DUSE_NGHTTP2=OFF -DUSE_LIBIDN2=OFF -DCURL_ZLIB=OFF -DCURL_BROTLI=OFF \
		-DCURL_ZSTD=OFF -DCURL_USE_GSSAPI=OFF -DUSE_LIBRTMP=OFF \
		-DCURL_DISABLE_LDAP=ON -DCURL_DISABLE_LDAPS=ON -DENABLE_UNIX_SOCKETS=OFF \
		-DCURL_CA_BUNDLE=none -DCURL_CA_PATH=none -DCURL_CA_FALLBACK=OFF >/dev/null
	cmake --build "$work/curl-build" -j "$jobs" >/dev/null
	cmake --install "$work/curl-build" >/dev/null
	printf '%s\n' "$v" >"$prefix/.source-version"
	touch "$prefix/.complete"
}

case "$need_build" in *mbedtls*) build_mbedtls ;; esac
# curl links against this mbedTLS, so it is rebuilt whenever mbedTLS is.
case "$need_build" in *mbedtls*) rm -f "$CACHE/curl-$CURL_VERSION/.complete"; build_curl ;;
*curl*) build_curl ;; esac
say "built:$need_build (cache: $CACHE)"
