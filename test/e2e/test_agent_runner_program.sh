# The reference agent-runner program (cmd/agent-runner): waits for the
# server's /healthz, sends READY=1 and WATCHDOG=1 over NOTIFY_SOCKET, exits 0
# on SIGTERM and when its parent dies. (Tasks: test_agent_runner_tasks.sh.)
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}
AR=${STG_BUILD_DIR:?}/agent-runner
STG_BG_PIDS=""

# start_http PORT STATUS NAME: runs the helper's HTTP server; sets $port.
start_http() {
	rm -f "$T/$3.port"
	"$H" http-ok "$1" "$T/$3.port" "$2" >"$T/$3.out" 2>&1 &
	http_pid=$!
	STG_BG_PIDS="$STG_BG_PIDS $http_pid"
	wait_for 10 test -s "$T/$3.port" || fail "http-ok did not start: $(cat "$T/$3.out")"
	port=$(cat "$T/$3.port")
}

# start_notify NAME: a datagram receiver at $T/NAME.sock writing $T/NAME.msgs.
start_notify() {
	"$H" notify-recv "$T/$1.sock" "$T/$1.msgs" &
	STG_BG_PIDS="$STG_BG_PIDS $!"
	wait_for 10 test -e "$T/$1.msgs" || fail "notify-recv did not start"
}

# count_ge N PATTERN FILE: at least N lines of FILE match PATTERN
count_ge() { [ "$(grep -c -- "$2" "$3")" -ge "$1" ]; }

# stop_bg PID: SIGKILL a helper and reap it quietly
stop_bg() { kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# the process is gone or a zombie
gone() {
	[ ! -e "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

case_ "healthy server: READY=1, watchdog pings, SIGTERM exits 0"
start_http 0 200 srv1
start_notify n1
STIGMER_SERVER_ADDR=127.0.0.1:$port NOTIFY_SOCKET=$T/n1.sock WATCHDOG_USEC=200000 \
	"$AR" 2>"$T/ar1.err" &
ar=$!
wait_for 20 grep -qx READY=1 "$T/n1.msgs" && pass || fail "no READY=1: $(cat "$T/ar1.err")"
expect_in "$(cat "$T/srv1.out")" "request: GET /healthz HTTP/1.1"
# Every 100 ms: a handful arrive soon.
wait_for 20 count_ge 3 '^WATCHDOG=1$' "$T/n1.msgs" && pass ||
	fail "fewer than 3 WATCHDOG=1: $(cat "$T/n1.msgs")"
kill -TERM "$ar"
wait "$ar" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit status on SIGTERM"
log=$(cat "$T/ar1.err")
expect_in "$log" "info  agent-runner: starting"
expect_in "$log" "is healthy"
expect_in "$log" "sent READY=1"
expect_in "$log" "watchdog: sending WATCHDOG=1 every 100 ms"
expect_in "$log" "SIGTERM: exiting"
expect_in "$(cat "$T/n1.msgs")" "STOPPING=1"

case_ "no WATCHDOG_USEC: no pings; a host name (every address tried)"
start_notify n2
STIGMER_SERVER_ADDR=localhost:$port NOTIFY_SOCKET=$T/n2.sock "$AR" 2>"$T/ar2.err" &
ar=$!
wait_for 20 grep -qx READY=1 "$T/n2.msgs" && pass || fail "no READY=1: $(cat "$T/ar2.err")"
kill -TERM "$ar"
wait "$ar" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit status"
expect_not_in "$(cat "$T/n2.msgs")" "WATCHDOG=1"
stop_bg "$http_pid"

case_ "server not up yet: retries with backoff, ready once it answers"
start_http 0 200 probe
free=$port
stop_bg "$http_pid"
start_notify n3
STIGMER_SERVER_ADDR=127.0.0.1:$free NOTIFY_SOCKET=$T/n3.sock "$AR" 2>"$T/ar3.err" &
ar=$!
STG_BG_PIDS="$STG_BG_PIDS $ar"
wait_for 20 grep -q "attempt 2): connect: connection refused" "$T/ar3.err" && pass ||
	fail "no retry logged: $(cat "$T/ar3.err")"
expect_eq "$(cat "$T/n3.msgs")" "" "nothing notified before the server is up"
start_http "$free" 200 srv3
wait_for 30 grep -qx READY=1 "$T/n3.msgs" && pass || fail "no READY=1: $(cat "$T/ar3.err")"
kill -TERM "$ar"
wait "$ar" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit status"
stop_bg "$http_pid"

case_ "a non-2xx /healthz is not ready"
start_http 0 503 srv4
start_notify n4
STIGMER_SERVER_ADDR=127.0.0.1:$port NOTIFY_SOCKET=$T/n4.sock "$AR" 2>"$T/ar4.err" &
ar=$!
STG_BG_PIDS="$STG_BG_PIDS $ar"
wait_for 20 grep -q "attempt 1): status 503" "$T/ar4.err" && pass || fail "$(cat "$T/ar4.err")"
wait_for 20 count_ge 2 'request: GET /healthz' "$T/srv4.out" && pass ||
	fail "did not retry"
expect_not_in "$(cat "$T/n4.msgs")" "READY=1"
kill -TERM "$ar"
wait "$ar" && rc=0 || rc=$?
expect_eq "$rc" 0 "SIGTERM while waiting for the server"
stop_bg "$http_pid"

case_ "exits when its parent dies"
bash -c '"$1" 2>"$2" & echo $! >"$3"; exec sleep 600' _ "$AR" "$T/ar5.err" "$T/ar5.pid" &
parent=$!
STG_BG_PIDS="$STG_BG_PIDS $parent"
wait_for 10 test -s "$T/ar5.pid" || fail "no pid"
ar=$(cat "$T/ar5.pid")
STG_BG_PIDS="$STG_BG_PIDS $ar"
wait_for 10 grep -q "starting" "$T/ar5.err" || fail "did not start"
if kill -0 "$ar" 2>/dev/null; then pass; else fail "exited early: $(cat "$T/ar5.err")"; fi
stop_bg "$parent"
wait_for 20 gone "$ar" && pass || fail "still running after its parent died"
wait_for 10 grep -q "parent process .* exited: exiting" "$T/ar5.err" && pass ||
	fail "no log line: $(cat "$T/ar5.err")"

case_ "started by a supervisor that is already gone"
STIGMER_SUPERVISOR_PID=999999999 STIGMER_SERVER_ADDR=127.0.0.1:1 "$AR" 2>"$T/ar6.err" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit status"
expect_in "$(cat "$T/ar6.err")" "already exited"

case_ "bad STIGMER_SERVER_ADDR"
STIGMER_SERVER_ADDR=nonsense "$AR" 2>"$T/ar7.err" && rc=0 || rc=$?
expect_eq "$rc" 2 "exit status"
expect_in "$(cat "$T/ar7.err")" "expected host:port"

for p in $STG_BG_PIDS; do stop_bg "$p"; done
STG_BG_PIDS=""
finish
