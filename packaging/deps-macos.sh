#!/bin/sh
# The build dependencies on macOS (the release workflow's darwin jobs): what
# third_party/deps.sh does on Debian, without apt.
#
#   packaging/deps-macos.sh
#
# - libuv, inih, jansson, SQLite, cmake and pkg-config from Homebrew.
# - mbedTLS and curl built static, at the versions pinned in
#   third_party/versions.env, from the very upstream tarballs Debian's source
#   packages carry (the .orig tarballs), checked against the SHA-256 that
#   Debian's signed source index lists for them.
# - llhttp's C sources from Debian's node-llhttp package (the same 8.1.0 the
#   Linux build uses), checked against the SHA-256 in Debian's signed package
#   index; printed as the CMake arguments to pass.
#
# Prints the CMake arguments for packaging/release.sh (STIGMER_CMAKE_ARGS).
# DEBIAN_MIRROR overrides https://deb.debian.org/debian.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd -P)
. "$here/third_party/versions.env"
CACHE=${STIGMER_DEPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stigmer-deps}
MIRROR=${DEBIAN_MIRROR:-https://deb.debian.org/debian}

say() { printf 'deps-macos: %s\n' "$*" >&2; }
die() { printf 'deps-macos: %s\n' "$*" >&2; exit 1; }

# Pinned by hand from Debian's signed indexes (trixie Sources, bookworm
# Packages); a change of versions.env needs new lines here.
MBEDTLS_ORIG=pool/main/m/mbedtls/mbedtls_${MBEDTLS_VERSION}.orig.tar.bz2
MBEDTLS_ORIG_SHA256=8fb65fae8dcae5840f793c0a334860a411f884cc537ea290ce1c52bb64ca007a
CURL_ORIG=pool/main/c/curl/curl_${CURL_VERSION}.orig.tar.gz
CURL_ORIG_SHA256=6766ada7101d292b42b8b15681120acd68effa4a9660935853cf6d61f0d984d4
LLHTTP_DEB=pool/main/n/node-undici/node-llhttp_8.1.0~5.15.0+dfsg1+~cs20.10.9.3-1+deb12u4_all.deb
LLHTTP_DEB_SHA256=fa9fe58b10e813e67f31713b48ac2b489a1ed3bf808f0bc89d137a18c6d0b67c
[ "$MBEDTLS_VERSION" = 3.6.6 ] && [ "$CURL_VERSION" = 8.14.1 ] ||
	die "versions.env changed (mbedTLS $MBEDTLS_VERSION, curl $CURL_VERSION): update the pinned hashes here"

command -v brew >/dev/null || die "Homebrew is needed"
brew install --quiet cmake pkg-config libuv inih jansson sqlite >&2

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
jobs=$(sysctl -n hw.ncpu 2>/dev/null || echo 2)

fetch() { # pool-path sha256 dest
	say "fetching $MIRROR/$1"
	curl -fsSL --retry 3 -o "$3" "$MIRROR/$1"
	got=$(shasum -a 256 "$3" | cut -d' ' -f1)
	[ "$got" = "$2" ] || die "$1: SHA-256 $got, expected $2"
}

if [ ! -f "$CACHE/mbedtls-$MBEDTLS_VERSION/.complete" ]; then
	fetch "$MBEDTLS_ORIG" "$MBEDTLS_ORIG_SHA256" "$work/mbedtls.tar.bz2"
	tar -xjf "$work/mbedtls.tar.bz2" -C "$work"
	src="$work/mbedtls-$MBEDTLS_VERSION"
	cfg="$src/include/mbedtls/mbedtls_config.h"
	for d in MBEDTLS_THREADING_C MBEDTLS_THREADING_PTHREAD; do
		sed -i '' "s|^//#define $d\$|#define $d|" "$cfg"
		grep -q "^#define $d\$" "$cfg" || die "cannot enable $d in $cfg"
	done
	prefix="$CACHE/mbedtls-$MBEDTLS_VERSION"
	rm -rf "$prefix"
	cmake -S "$src" -B "$work/mbedtls-build" -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
		-DCMAKE_POSITION_INDEPENDENT_CODE=ON -DUSE_STATIC_MBEDTLS_LIBRARY=ON \
		-DUSE_SHARED_MBEDTLS_LIBRARY=OFF -DENABLE_PROGRAMS=OFF -DENABLE_TESTING=OFF >&2
	cmake --build "$work/mbedtls-build" -j "$jobs" >&2
	cmake --install "$work/mbedtls-build" >&2
	printf '%s (upstream)\n' "$MBEDTLS_VERSION" >"$prefix/.source-version"
	touch "$prefix/.complete"
	rm -f "$CACHE/curl-$CURL_VERSION/.complete"
fi

if [ ! -f "$CACHE/curl-$CURL_VERSION/.complete" ]; then
	fetch "$CURL_ORIG" "$CURL_ORIG_SHA256" "$work/curl.tar.gz"
	tar -xzf "$work/curl.tar.gz" -C "$work"
	src="$work/curl-$CURL_VERSION"
	prefix="$CACHE/curl-$CURL_VERSION"
	mtls="$CACHE/mbedtls-$MBEDTLS_VERSION"
	rm -rf "$prefix"
	# The same options as third_party/deps.sh.
	cmake -S "$src" -B "$work/curl-build" -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
		-DCMAKE_POSITION_INDEPENDENT_CODE=ON \
		-DBUILD_SHARED_LIBS=OFF -DBUILD_STATIC_LIBS=ON \
		-DBUILD_CURL_EXE=OFF -DBUILD_TESTING=OFF -DBUILD_LIBCURL_DOCS=OFF \
		-DBUILD_MISC_DOCS=OFF -DENABLE_CURL_MANUAL=OFF -DBUILD_EXAMPLES=OFF \
		-DHTTP_ONLY=ON -DENABLE_THREADED_RESOLVER=ON \
		-DCURL_USE_MBEDTLS=ON -DCURL_USE_OPENSSL=OFF -DCURL_USE_GNUTLS=OFF \
		-DCURL_USE_SECTRANSP=OFF \
		-DMBEDTLS_INCLUDE_DIR="$mtls/include" \
		-DMBEDTLS_LIBRARY="$mtls/lib/libmbedtls.a" \
		-DMBEDX509_LIBRARY="$mtls/lib/libmbedx509.a" \
		-DMBEDCRYPTO_LIBRARY="$mtls/lib/libmbedcrypto.a" \
		-DCURL_USE_LIBPSL=OFF -DCURL_USE_LIBSSH2=OFF -DCURL_USE_LIBSSH=OFF \
		-DUSE_NGHTTP2=OFF -DUSE_LIBIDN2=OFF -DCURL_ZLIB=OFF -DCURL_BROTLI=OFF \
		-DCURL_ZSTD=OFF -DCURL_USE_GSSAPI=OFF -DUSE_LIBRTMP=OFF -DUSE_APPLE_IDN=OFF \
		-DCURL_DISABLE_LDAP=ON -DCURL_DISABLE_LDAPS=ON -DENABLE_UNIX_SOCKETS=OFF \
		-DCURL_CA_BUNDLE=none -DCURL_CA_PATH=none -DCURL_CA_FALLBACK=OFF >&2
	cmake --build "$work/curl-build" -j "$jobs" >&2
	cmake --install "$work/curl-build" >&2
	printf '%s (upstream)\n' "$CURL_VERSION" >"$prefix/.source-version"
	touch "$prefix/.complete"
fi

ll="$CACHE/llhttp-8.1.0"
if [ ! -f "$ll/.complete" ]; then
	fetch "$LLHTTP_DEB" "$LLHTTP_DEB_SHA256" "$work/llhttp.deb"
	(cd "$work" && ar -x llhttp.deb && mkdir -p data && tar -xf data.tar.* -C data)
	rm -rf "$ll"
	mkdir -p "$ll/src" "$ll/include"
	cp "$work/data/usr/share/llhttp/"*.c "$ll/src/"
	cp "$work/data/usr/share/include/llhttp/"*.h "$ll/include/"
	touch "$ll/.complete"
fi

printf '%s\n' "-DSTIGMER_DEPS_CACHE=$CACHE -DLLHTTP_SRC_DIR=$ll/src -DLLHTTP_INCLUDE_DIR=$ll/include"
