#!/bin/sh
# Installs the tools `make bench` compares stigmer with, from Debian's
# packages, when they are missing: runit (runsv, svlogd), s6 (s6-supervise,
# s6-log), daemontools (supervise, multilog), supervisor (supervisord), wrk,
# curl, jq. Services that a package would start are not started
# (policy-rc.d), the bench starts its own instances.
set -eu
need=""
for pair in runsv:runit s6-supervise:s6 supervise:daemontools supervisord:supervisor \
	wrk:wrk curl:curl jq:jq sha256sum:coreutils strip:binutils; do
	cmd=${pair%%:*}
	pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "bench: missing$need; install them (apt-get install$need) or run as root" >&2
	exit 1
fi
echo "bench: installing$need"
# Keep package scripts from starting system services.
prc=/usr/sbin/policy-rc.d
made_prc=no
if [ ! -e "$prc" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$prc"
	chmod 755 "$prc"
	made_prc=yes
fi
export DEBIAN_FRONTEND=noninteractive
rc=0
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $need; } || rc=$?
[ "$made_prc" = yes ] && rm -f "$prc"
exit $rc
