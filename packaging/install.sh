#!/bin/sh
# Installs stigmer into DESTDIR/PREFIX (what `make install` runs).
#
#   packaging/install.sh BINARY PREFIX [DESTDIR]
#
#   bin/stigmer                                  the binary
#   bin/stigmer-server, ...                      applet links: relative symlinks,
#                                                the set `stigmer --install -s` makes
#   share/man/man1/stigmer.1                     the man page
#   share/bash-completion/completions/stigmer    completions
#   share/zsh/site-functions/_stigmer
#   share/fish/vendor_completions.d/stigmer.fish
#   lib/systemd/user/stigmer.service             units, for PREFIX/bin/stigmer
#   lib/systemd/system/stigmer.service
#   lib/sysusers.d/stigmer.conf
#   share/stigmer/launchd/dev.stigmer.daemon.plist   the launchd template
set -eu

die() { printf 'install: %s\n' "$*" >&2; exit 1; }
[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: packaging/install.sh BINARY PREFIX [DESTDIR]"
bin=$1 prefix=$2 destdir=${3:-}
case $prefix in /*) ;; *) die "PREFIX must be absolute, got '$prefix'" ;; esac
[ -x "$bin" ] || die "$bin is not an executable: build first (make build)"
src=$(cd "$(dirname "$0")" && pwd -P)
root=$destdir$prefix

say() { printf '  %s\n' "$*"; }
inst() { # mode source dest
	mkdir -p "$(dirname "$3")"
	cp "$2" "$3.tmp.$$"
	chmod "$1" "$3.tmp.$$"
	mv -f "$3.tmp.$$" "$3"
	say "$3"
}
# A unit for this prefix: the binary's path filled in, no STIGMER_HOME line.
unit() { # source dest
	mkdir -p "$(dirname "$2")"
	sed -e "s#@STIGMER@#$prefix/bin/stigmer#g" -e '/@STIGMER_HOME@/d' "$1" >"$2.tmp.$$"
	chmod 0644 "$2.tmp.$$"
	mv -f "$2.tmp.$$" "$2"
	say "$2"
}

inst 0755 "$bin" "$root/bin/stigmer"
# The links the binary itself knows of, made absolute by --install -s, then
# turned into relative ones so that the tree works wherever DESTDIR puts it.
"$root/bin/stigmer" --install -s "$root/bin" >/dev/null
real=$(cd "$root/bin" && pwd -P)/stigmer
for l in "$root"/bin/*; do
	[ -L "$l" ] || continue
	t=$(readlink "$l")
	[ "$t" = "$real" ] || [ "$t" = "$root/bin/stigmer" ] || continue
	ln -sfn stigmer "$l"
	say "$l -> stigmer"
done

inst 0644 "$src/man/stigmer.1" "$root/share/man/man1/stigmer.1"
inst 0644 "$src/completions/stigmer.bash" "$root/share/bash-completion/completions/stigmer"
inst 0644 "$src/completions/_stigmer" "$root/share/zsh/site-functions/_stigmer"
inst 0644 "$src/completions/stigmer.fish" "$root/share/fish/vendor_completions.d/stigmer.fish"
unit "$src/systemd/stigmer.service" "$root/lib/systemd/user/stigmer.service"
unit "$src/systemd/stigmer-system.service" "$root/lib/systemd/system/stigmer.service"
inst 0644 "$src/systemd/stigmer.sysusers" "$root/lib/sysusers.d/stigmer.conf"
inst 0644 "$src/launchd/dev.stigmer.daemon.plist" "$root/share/stigmer/launchd/dev.stigmer.daemon.plist"
