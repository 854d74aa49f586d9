#!/usr/bin/env bash
# Fetching the agent-runner (issue 4): a slim build (nothing embedded) run
# by the supervisor and by `stigmer agent-runner fetch`, against the HTTPS
# fixture test/fixtures/tls-server on loopback with the test CA.
. "$(dirname "$0")/lib.sh"

: "${STIGMER_SLIM_BIN:?STIGMER_SLIM_BIN must name the slim test binary}"
: "${STG_TLS_SERVER:?STG_TLS_SERVER must name stg-test-tls-server}"
: "${STG_BUILD_DIR:?}"
: "${STG_SOURCE_DIR:?}"
SLIM=$STIGMER_SLIM_BIN
CERTS=$STG_SOURCE_DIR/test/fixtures/certs
AR=$STG_BUILD_DIR/agent-runner

os=$(uname -s | tr A-Z a-z)
case $(uname -m) in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac

# The release files: 9.9.9 is the reference agent-runner, 9.9.8 the same
# program with a trailing byte (another digest).
WWW=$T/www
mkdir -p "$WWW/rel"
publish() { # version file
	local name=agent-runner-$1-$os-$arch
	cp "$2" "$WWW/rel/$name"
	(cd "$WWW/rel" && sha256sum "$name" >"$name.sha256")
}
publish 9.9.9 "$AR"
cp "$AR" "$T/ar-998"
printf '\n' >>"$T/ar-998"
publish 9.9.8 "$T/ar-998"
sum999=$(sha256sum <"$AR" | cut -d' ' -f1)
sum998=$(sha256sum <"$T/ar-998" | cut -d' ' -f1)

REQLOG=$T/requests.log
: >"$REQLOG"
"$STG_TLS_SERVER" --root "$WWW" --cert "$CERTS/server.crt" --key "$CERTS/server.key" \
	--log "$REQLOG" >"$T/tls.port" 2>"$T/tls.err" &
STG_BG_PIDS="$!"
wait_for 10 test -s "$T/tls.port" || { echo "the TLS fixture did not start: $(cat "$T/tls.err")"; exit 1; }
PORT=$(head -1 "$T/tls.port")

# write_config HOME [version] [url-prefix]: a stack on a free port fetching
# from the fixture.
write_config() {
	mkdir -p "$1"
	{
		printf '[server]\nlisten = 127.0.0.1:%s\n' "$(free_port)"
		printf '[agent-runner]\n'
		[ -n "${2:-}" ] && printf 'version = %s\n' "$2"
		printf 'url = https://127.0.0.1:%s/%s/agent-runner-{version}-{os}-{arch}\n' "$PORT" "${3:-rel}"
		printf 'ca_file = %s/ca.crt\n' "$CERTS"
	} >"$1/config.ini"
}
# requests PATH-SUFFIX: how many GETs of that file the fixture served.
requests() { grep -c "^GET /.*/agent-runner-$1-$os-$arch " "$REQLOG" || true; }
record() { jq -r ".$2" "$1/bin/agent-runner.json" 2>/dev/null; }
stop_home() { STIGMER_HOME=$1 timeout 60 "$SLIM" daemon stop >/dev/null 2>&1 || true; }

H1=$STIGMER_HOME
write_config "$H1" 9.9.9

case_ "slim: daemon start fetches, verifies, installs, runs the agent-runner"
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(comp agent-runner state)" ready "agent-runner state"
expect_eq "$(record "$H1" origin)" downloaded "record origin"
expect_eq "$(record "$H1" version)" 9.9.9 "record version"
expect_eq "$(record "$H1" sha256)" "$sum999" "record sha256"
expect_eq "$(sha256sum <"$H1/bin/agent-runner" | cut -d' ' -f1)" "$sum999" "installed file"
expect_eq "$(cut -d' ' -f1 "$H1/cache/agent-runner/9.9.9/agent-runner.sha256")" "$sum999" "cache sidecar"
expect_eq "$(requests 9.9.9)" 1 "downloads of 9.9.9"
grep -q "GET /rel/agent-runner-9.9.9-$os-$arch.sha256 200" "$REQLOG" && pass || fail "no .sha256 request: $(cat "$REQLOG")"
[ -n "$(comp_procs agent-runner)" ] && pass || fail "no agent-runner process"
run "$SLIM" daemon logs -n 50 agent-runner
expect_in "$out" "downloaded agent-runner 9.9.9"

case_ "agent-runner status shows the cache"
run "$SLIM" agent-runner status
expect_rc 0
expect_in "$out" "9.9.9: "
expect_in "$out" "(verified)"
run "$SLIM" agent-runner status --json
expect_eq "$(echo "$out" | jq -r '.cache[0].version + " " + (.cache[0].verified|tostring) + " " + .cache[0].sha256')" \
	"9.9.9 true $sum999" "status --json cache"
expect_eq "$(echo "$out" | jq -r '.fetch.version')" 9.9.9 "status --json fetch.version"

case_ "slim: bin/agent-runner deleted while running: the next start installs from the cache"
old=$(comp agent-runner pid)
rm -f "$H1/bin/agent-runner"
kill "$old"
back() { [ "$(comp agent-runner state)" = ready ] && [ "$(comp agent-runner pid)" != "$old" ]; }
wait_for 60 back && pass || fail "agent-runner did not come back: $(status_json)"
[ -x "$H1/bin/agent-runner" ] && pass || fail "bin/agent-runner not restored"
expect_eq "$(requests 9.9.9)" 1 "downloads of 9.9.9 after the restart"
run "$SLIM" daemon logs -n 50 agent-runner
expect_in "$out" "from the cache"
stop_home "$H1"

case_ "the cache serves a second home (same version) without a request"
H2=$T/home2
write_config "$H2" 9.9.9
mkdir -p "$H2/cache"
ln -s "$H1/cache/agent-runner" "$H2/cache/agent-runner"
export STIGMER_HOME=$H2
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(record "$H2" origin)" downloaded "second home: record origin"
expect_eq "$(requests 9.9.9)" 1 "downloads of 9.9.9 (second home)"
stop_home "$H2"
export STIGMER_HOME=$H1

case_ "switching versions back and forth downloads each once"
write_config "$H1" 9.9.8
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(record "$H1" version)" 9.9.8 "record version after the switch"
expect_eq "$(record "$H1" sha256)" "$sum998" "record sha256 after the switch"
stop_home "$H1"
write_config "$H1" 9.9.9
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(record "$H1" version)" 9.9.9 "record version, back"
stop_home "$H1"
write_config "$H1" 9.9.8
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(record "$H1" version)" 9.9.8 "record version, again"
stop_home "$H1"
expect_eq "$(requests 9.9.9)" 1 "downloads of 9.9.9"
expect_eq "$(requests 9.9.8)" 1 "downloads of 9.9.8"

case_ "a wrong checksum: retried and logged, nothing installed, not running"
H3=$T/home3
write_config "$H3" 9.9.9 badsum/rel
export STIGMER_HOME=$H3
run timeout 120 "$SLIM" daemon start
expect_rc 1
expect_in "$err" "agent-runner is fetching"
expect_in "$err" "checksum"
wait_for 30 sh -c "grep -q 'fetch attempt 2 failed' '$H3/logs/agent-runner.log'" && pass ||
	fail "no second failed attempt in the agent-runner's log: $(cat "$H3/logs/agent-runner.log")"
grep -q "checksum" "$H3/logs/supervisor.log" && pass || fail "the supervisor log does not name the checksum failure"
expect_eq "$(comp agent-runner state)" fetching "agent-runner state"
expect_eq "$(comp agent-runner pid)" null "agent-runner pid"
[ ! -e "$H3/bin/agent-runner" ] && pass || fail "bin/agent-runner exists after checksum failures"
expect_eq "$(comp server state)" ready "server state meanwhile"
run "$SLIM" daemon status
expect_rc 1
expect_in "$out" "checksum"
expect_in "$out" "; retry in "
# A restart of the agent-runner starts the fetch over at once.
run timeout 60 "$SLIM" daemon restart agent-runner
expect_eq "$(grep -c 'fetching agent-runner 9.9.9 from' "$H3/logs/agent-runner.log")" 2 "fetches started"
run timeout 60 "$SLIM" daemon stop
expect_rc 0
expect_no_stack

case_ "public_key: a signature by another key is final (missing); the right key installs"
H8=$T/home8
write_config "$H8" 9.9.9
export STIGMER_HOME=$H8
openssl dgst -sha256 -sign "$CERTS/sign.key" -out "$WWW/rel/agent-runner-9.9.9-$os-$arch.sig" \
	"$WWW/rel/agent-runner-9.9.9-$os-$arch"
printf 'public_key = %s/other.pub.pem\n' "$CERTS" >>"$H8/config.ini"
run timeout 120 "$SLIM" daemon start
expect_rc 1
expect_eq "$(comp agent-runner state)" missing "agent-runner state with the wrong key"
expect_in "$(comp agent-runner reason)" "signature"
[ ! -e "$H8/bin/agent-runner" ] && pass || fail "bin/agent-runner installed with a bad signature"
stop_home "$H8"
sed -i 's#other.pub.pem#sign.pub.pem#' "$H8/config.ini"
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(record "$H8" sha256)" "$sum999" "record sha256 with the right key"
expect_eq "$(sed -n 2p "$H8/cache/agent-runner/9.9.9/agent-runner.sha256")" \
	"key $(sha256sum <"$CERTS/sign.pub.pem" | cut -d' ' -f1)" "sidecar names the key"
stop_home "$H8"

case_ "a pinned agent-runner is never overwritten by a fetch"
H4=$T/home4
write_config "$H4" 9.9.9
export STIGMER_HOME=$H4
run "$SLIM" agent-runner install "$T/ar-998" --version mine
expect_rc 0
n=$(requests 9.9.9)
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(record "$H4" origin)" installed "record origin"
expect_eq "$(sha256sum <"$H4/bin/agent-runner" | cut -d' ' -f1)" "$sum998" "pinned file"
run "$SLIM" agent-runner fetch
expect_rc 1
expect_in "$err" "pinned"
expect_eq "$(sha256sum <"$H4/bin/agent-runner" | cut -d' ' -f1)" "$sum998" "pinned file after fetch"
expect_eq "$(requests 9.9.9)" "$n" "downloads while pinned"
stop_home "$H4"

case_ "a development build without [agent-runner] version does not fetch"
if "$SLIM" version | head -1 | grep -q -- '-dev'; then
	H5=$T/home5
	write_config "$H5" ""
	export STIGMER_HOME=$H5
	n=$(wc -l <"$REQLOG")
	run timeout 120 "$SLIM" daemon start
	expect_rc 1
	expect_eq "$(comp agent-runner state)" missing "agent-runner state"
	reason=$(comp agent-runner reason)
	expect_in "$reason" "development build"
	expect_in "$reason" "stigmer agent-runner install PATH"
	expect_in "$reason" "make install-agent-runner"
	expect_in "$reason" "[agent-runner] version"
	expect_eq "$(wc -l <"$REQLOG")" "$n" "requests from a dev build"
	run "$SLIM" agent-runner fetch
	expect_rc 1
	expect_in "$err" "development build"
	stop_home "$H5"
else
	echo "skipped: this build has a release version"
fi

case_ "stigmer agent-runner fetch in the foreground, then from the cache"
H6=$T/home6
write_config "$H6" 9.9.8
export STIGMER_HOME=$H6
n=$(requests 9.9.8)
run timeout 60 "$SLIM" agent-runner fetch
expect_rc 0
expect_in "$out" "downloaded and verified"
expect_in "$err" "agent-runner 9.9.8: "
expect_eq "$(record "$H6" origin)" downloaded "record origin"
expect_eq "$(record "$H6" sha256)" "$sum998" "record sha256"
expect_eq "$(requests 9.9.8)" "$((n + 1))" "downloads of 9.9.8"
rm -f "$H6/bin/agent-runner"
run timeout 60 "$SLIM" agent-runner fetch
expect_rc 0
expect_in "$out" "from the cache"
expect_eq "$(requests 9.9.8)" "$((n + 1))" "downloads of 9.9.8 (cached)"

case_ "status shows the download's progress; kill -9 mid-download, then start again"
H7=$T/home7
write_config "$H7" 9.9.9 drip/rel
export STIGMER_HOME=$H7
timeout 200 "$SLIM" daemon start >"$T/start7.out" 2>"$T/start7.err" &
startpid=$!
wait_for 30 sh -c "'$SLIM' daemon status --json | jq -e '.components[2].fetch.bytes > 0'" && pass ||
	fail "no progress in status: $(status_json)"
st=$(status_json)
expect_eq "$(echo "$st" | jq -r '.components[2].state')" fetching "state while dripping"
expect_eq "$(echo "$st" | jq -r '.components[2].fetch.total')" "$(stat -c %s "$AR")" "fetch.total"
expect_eq "$(echo "$st" | jq -r '.components[2].fetch | (.rate|type) + " " + (.attempts|tostring) + " " + .url')" \
	"number 0 https://127.0.0.1:$PORT/drip/rel/agent-runner-9.9.9-$os-$arch" "fetch fields"
expect_eq "$(echo "$st" | jq -r '.components[0].state')" ready "server while fetching"
run "$SLIM" daemon status
expect_in "$out" "fetching"
expect_in "$out" "version 9.9.9:"
wait_for 10 grep -q "fetching agent-runner 9.9.9: " "$T/start7.err" && pass ||
	fail "daemon start printed no progress: $(cat "$T/start7.err")"
kill -0 "$startpid" 2>/dev/null && pass || fail "daemon start returned while fetching"
[ -s "$H7/cache/agent-runner/9.9.9/agent-runner.partial" ] && pass || fail "no .partial"
# One download per version at a time: a second one is refused.
run timeout 30 "$SLIM" agent-runner fetch --attempts 1
expect_rc 1
expect_in "$err" "another stigmer is downloading agent-runner 9.9.9"
kill -9 "$(sup_pid)"
kill "$startpid" 2>/dev/null
wait "$startpid" 2>/dev/null
write_config "$H7" 9.9.9
run timeout 120 "$SLIM" daemon start
expect_rc 0
expect_eq "$(comp agent-runner state)" ready "agent-runner after the restart"
expect_eq "$(record "$H7" sha256)" "$sum999" "record sha256 after the restart"
expect_eq "$(sha256sum <"$H7/bin/agent-runner" | cut -d' ' -f1)" "$sum999" "installed file after the restart"
[ ! -e "$H7/cache/agent-runner/9.9.9/agent-runner.partial" ] && pass || fail ".partial left behind"
stop_home "$H7"
expect_no_stack

finish
