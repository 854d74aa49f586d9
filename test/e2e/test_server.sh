# internal-server and internal-workflow-runner as the supervisor runs them:
# /healthz, READY=1 over NOTIFY_SOCKET, SIGTERM, port in use, parent death,
# and the runner becoming ready only once the server is up.
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}

# alive PID: the process exists and is not a zombie.
alive() {
	[ -e "/proc/$1/stat" ] || return 1
	case "$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null)" in
	" Z"* | "") return 1 ;;
	esac
	return 0
}
dead() { ! alive "$1"; }

# port_of LOGFILE: the port from "listening on 127.0.0.1:PORT".
port_of() { sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -n1; }

# wakeups PID: voluntary context switches so far (one per sleep that ended).
wakeups() { sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' "/proc/$1/status"; }

start_notify() { # SOCK OUT
	"$H" notify-listen "$1" "$2" &
	STG_BG_PIDS="${STG_BG_PIDS:-} $!"
	wait_for 5 test -S "$1"
}

case_ "--help is honest about what exists"
run "$STIGMER_BIN" internal-server --help
expect_rc 0
expect_in "$out" "docs/api.md"
expect_not_in "$out" "not implemented yet"
run "$STIGMER_BIN" internal-workflow-runner --help
expect_rc 0
expect_in "$out" "claims workflow tasks"

case_ "the server answers /healthz and notifies READY=1"
start_notify "$T/srv.sock" "$T/srv.notify"
NOTIFY_SOCKET="$T/srv.sock" "$STIGMER_BIN" internal-server --listen 127.0.0.1:0 2>"$T/srv.log" &
srv=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $srv"
wait_for 10 grep -q "listening on" "$T/srv.log" || fail "no 'listening on' in: $(cat "$T/srv.log")"
port=$(port_of "$T/srv.log")
[ -n "$port" ] && pass || fail "no port in the log"
body=$(curl -s --max-time 10 "http://127.0.0.1:$port/healthz")
expect_eq "$body" '{"status":"ok"}' "GET /healthz"
code=$(curl -s -o "$T/404.json" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/v1/nope")
expect_eq "$code" 404 "unknown route"
expect_in "$(cat "$T/404.json")" '"code":"not_found"'
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://127.0.0.1:$port/healthz")
expect_eq "$code" 405 "POST /healthz"
wait_for 10 grep -q "READY=1" "$T/srv.notify" || fail "no READY=1 received"
expect_in "$(cat "$T/srv.notify")" "STATUS=listening on 127.0.0.1:$port"

case_ "the same with bash /dev/tcp (no curl needed)"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
resp=$(timeout 10 cat <&3)
exec 3<&-
expect_in "$resp" "HTTP/1.1 200 OK"

case_ "an idle server makes no wakeups"
sleep 0.3
w1=$(wakeups "$srv")
sleep 1.5
w2=$(wakeups "$srv")
expect_eq "$w2" "$w1" "voluntary context switches while idle"

case_ "a port in use is a clear error and exit 1"
run "$STIGMER_BIN" internal-server --listen "127.0.0.1:$port"
expect_rc 1
expect_in "$err" "stigmer-server: listen 127.0.0.1:$port: address already in use"

case_ "SIGTERM exits 0"
kill -TERM "$srv"
wait "$srv" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit status after SIGTERM"
expect_in "$(cat "$T/srv.log")" "stopped"
wait_for 5 grep -q "STOPPING=1" "$T/srv.notify" || fail "no STOPPING=1"

case_ "bad configuration exits 2"
run "$STIGMER_BIN" internal-server --listen nowhere
expect_rc 2
expect_in "$err" "stigmer-server:"
expect_in "$err" "expected host:port"
printf '[server]\nidle_timeout = soon\n' >"$STIGMER_HOME/config.ini"
run "$STIGMER_BIN" internal-server --listen 127.0.0.1:0
expect_rc 2
expect_in "$err" "config.ini:2:"
rm -f "$STIGMER_HOME/config.ini"
run "$STIGMER_BIN" internal-workflow-runner --server 'no port'
expect_rc 2
expect_in "$err" "--server"

case_ "the workflow runner is ready only once the server is up"
start_notify "$T/wr.sock" "$T/wr.notify"
STIGMER_SERVER_ADDR="127.0.0.1:$port" NOTIFY_SOCKET="$T/wr.sock" \
	"$STIGMER_BIN" internal-workflow-runner --log-level debug 2>"$T/wr.log" &
wr=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $wr"
wait_for 20 grep -q "attempt 4" "$T/wr.log" || fail "no retries: $(cat "$T/wr.log")"
if grep -q READY=1 "$T/wr.notify" 2>/dev/null; then fail "ready without a server"; else pass; fi
expect_in "$(cat "$T/wr.log")" "waiting for the server at 127.0.0.1:$port"
"$STIGMER_BIN" internal-server --listen "127.0.0.1:$port" 2>"$T/srv2.log" &
srv2=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $srv2"
wait_for 20 grep -q "READY=1" "$T/wr.notify" || fail "runner never ready: $(cat "$T/wr.log")"
expect_in "$(cat "$T/wr.log")" "is up; ready"
# The server really was up before the runner said so.
grep -q "listening on" "$T/srv2.log" && pass || fail "server not listening yet"

case_ "a ready runner makes no wakeups"
sleep 0.3
w1=$(wakeups "$wr")
sleep 1.5
w2=$(wakeups "$wr")
expect_eq "$w2" "$w1" "voluntary context switches while idle"

case_ "the runner exits 0 on SIGTERM"
kill -TERM "$wr"
wait "$wr" && rc=0 || rc=$?
expect_eq "$rc" 0 "runner exit status"
kill -TERM "$srv2"
wait "$srv2" && rc=0 || rc=$?
expect_eq "$rc" 0 "server exit status"

case_ "[server] listen in config.ini is used by both"
printf '[server]\nlisten = 127.0.0.1:0\n' >"$STIGMER_HOME/config.ini"
"$STIGMER_BIN" internal-server 2>"$T/cfg-srv.log" &
cs=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $cs"
wait_for 10 grep -q "listening on" "$T/cfg-srv.log" || fail "no 'listening on': $(cat "$T/cfg-srv.log")"
cport=$(port_of "$T/cfg-srv.log")
printf '[server]\nlisten = 127.0.0.1:%s\n' "$cport" >"$STIGMER_HOME/config.ini"
start_notify "$T/cfg.sock" "$T/cfg.notify"
NOTIFY_SOCKET="$T/cfg.sock" "$STIGMER_BIN" internal-workflow-runner 2>"$T/cfg-wr.log" &
cw=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $cw"
wait_for 20 grep -q "READY=1" "$T/cfg.notify" || fail "runner not ready: $(cat "$T/cfg-wr.log")"
expect_in "$(cat "$T/cfg-wr.log")" "the server at 127.0.0.1:$cport is up"
kill -INT "$cw" "$cs"
wait "$cw" && rc=0 || rc=$?
expect_eq "$rc" 0 "runner exit on SIGINT"
wait "$cs" && rc=0 || rc=$?
expect_eq "$rc" 0 "server exit on SIGINT"
rm -f "$STIGMER_HOME/config.ini"

case_ "both end when their parent (the supervisor) is SIGKILLed"
# A stand-in supervisor: a shell that starts both with its own pid in
# STIGMER_SUPERVISOR_PID, then waits.
bash -c '
	export STIGMER_SUPERVISOR_PID=$$
	"$0" internal-server --listen 127.0.0.1:0 2>"$1/pd-srv.log" & echo $! >"$1/pd-srv.pid"
	"$0" internal-workflow-runner --server 127.0.0.1:1 2>"$1/pd-wr.log" & echo $! >"$1/pd-wr.pid"
	wait' "$STIGMER_BIN" "$T" &
parent=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $parent"
wait_for 10 grep -q "listening on" "$T/pd-srv.log" || fail "server did not start"
wait_for 10 grep -q "waiting for the server" "$T/pd-wr.log" || fail "runner did not start"
ps=$(cat "$T/pd-srv.pid")
pw=$(cat "$T/pd-wr.pid")
STG_BG_PIDS="${STG_BG_PIDS:-} $ps $pw"
alive "$ps" && alive "$pw" && pass || fail "children not running"
kill -KILL "$parent"
wait "$parent" 2>/dev/null
wait_for 20 dead "$ps" && pass || fail "server still running after its parent died"
wait_for 20 dead "$pw" && pass || fail "runner still running after its parent died"
expect_in "$(cat "$T/pd-srv.log")" "the supervisor (pid $parent) is gone; stopping"
expect_in "$(cat "$T/pd-srv.log")" "stopped"
expect_in "$(cat "$T/pd-wr.log")" "the supervisor (pid $parent) is gone; stopping"

case_ "a parent that is already gone: refuse to start"
STIGMER_SUPERVISOR_PID=$parent run "$STIGMER_BIN" internal-server --listen 127.0.0.1:0
expect_rc 1
expect_in "$err" "already gone"

finish
