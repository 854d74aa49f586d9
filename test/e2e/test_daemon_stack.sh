# The real stack: server, workflow-runner and the embedded agent-runner.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
printf '[server]\nlisten = 127.0.0.1:%s\n[restart]\nbackoff_initial = 10ms\n' "$port" >"$STIGMER_HOME/config.ini"

case_ "start: every component ready"
run "$STIGMER_BIN" daemon start
expect_rc 0
for c in server workflow-runner agent-runner; do
	expect_eq "$(comp "$c" state)" ready "$c"
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null && pass || fail "no /healthz"
expect_eq "$(comp server status_text)" "listening on 127.0.0.1:$port" "server STATUS="

case_ "re-executed applets show their names"
sp=$(comp server pid)
wp=$(comp workflow-runner pid)
expect_eq "$(cat /proc/$sp/comm)" internal-server "server comm"
expect_in "$(tr '\0' ' ' </proc/$sp/cmdline)" "internal-server"
expect_in "$(tr '\0' ' ' </proc/$wp/cmdline)" "internal-workflow-runner"

case_ "what a component gets"
env=$(tr '\0' '\n' </proc/$sp/environ)
expect_in "$env" "STIGMER_HOME=$STIGMER_HOME"
expect_in "$env" "STIGMER_COMPONENT=server"
expect_in "$env" "STIGMER_SERVER_ADDR=127.0.0.1:$port"
expect_in "$env" "STIGMER_BACKEND_ENDPOINT=127.0.0.1:$port"
expect_in "$env" "NOTIFY_SOCKET=$STIGMER_HOME/run/notify.sock"
expect_in "$env" "LOG_LEVEL=info"
expect_eq "$(readlink /proc/$sp/fd/0)" /dev/null "stdin"
expect_in "$(readlink /proc/$sp/fd/1)" "socket:"
expect_eq "$(ps -o pgid= -p "$sp" | tr -d ' ')" "$sp" "server leads its group"
expect_eq "$(ps -o sid= -p "$sp" | tr -d ' ')" "$sp" "server leads its session"

case_ "an idle supervisor makes no wakeups"
sup=$(sup_pid)
ctx() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$sup/status"; }
sleep 0.5
before=$(ctx)
sleep 2
expect_eq "$(($(ctx) - before))" 0 "voluntary context switches of the supervisor in 2s"

case_ "kill -9 of each component restarts it and status counts it"
for c in server workflow-runner agent-runner; do
	old=$(comp "$c" pid)
	kill -9 "$old"
	wait_for 15 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[] | select(.name==\"$c\") | .state')\" = ready ] && [ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[] | select(.name==\"$c\") | .pid')\" != $old ]" && pass || fail "$c not back"
	expect_eq "$(comp "$c" restarts)" 1 "$c restarts"
	expect_eq "$(comp "$c" last_exit.signal)" 9 "$c last signal"
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null && pass || fail "no /healthz after restarts"

case_ "stop: runners first, then the server; nothing left"
run "$STIGMER_BIN" daemon stop
expect_rc 0
log=$(cat "$STIGMER_HOME/logs/supervisor.log")
s_line=$(grep -n "server: stopping" "$STIGMER_HOME/logs/supervisor.log" | tail -1 | cut -d: -f1)
w_line=$(grep -n "workflow-runner: stopped" "$STIGMER_HOME/logs/supervisor.log" | tail -1 | cut -d: -f1)
a_line=$(grep -n "agent-runner: stopped" "$STIGMER_HOME/logs/supervisor.log" | tail -1 | cut -d: -f1)
[ -n "$s_line" ] && [ "$w_line" -lt "$s_line" ] && [ "$a_line" -lt "$s_line" ] && pass || fail "stop order (server $s_line, wfr $w_line, agent $a_line)"
expect_no_stack

case_ "systemd: READY=1, STATUS=, STOPPING=1 on NOTIFY_SOCKET"
"$STG_TEST_HELPER" notify-recv "$T/systemd.sock" "$T/systemd.out" &
recv=$!
STG_BG_PIDS="$recv"
wait_for 5 test -e "$T/systemd.out"
NOTIFY_SOCKET="$T/systemd.sock" "$STIGMER_BIN" daemon run --no-echo 2>"$T/run.err" &
runner=$!
wait_for 10 grep -q "READY=1" "$T/systemd.out" && pass || fail "no READY=1 ($(cat "$T/systemd.out"))"
wait_for 5 grep -q "STATUS=server ready, workflow-runner ready, agent-runner ready" "$T/systemd.out" && pass || fail "no STATUS= line with every component ready ($(cat "$T/systemd.out"))"
for c in server workflow-runner agent-runner; do
	expect_eq "$(comp "$c" state)" ready "$c under daemon run"
done
# The children do not see the supervisor's own NOTIFY_SOCKET.
expect_not_in "$(tr '\0' '\n' </proc/$(comp server pid)/environ)" "NOTIFY_SOCKET=$T/systemd.sock"
kill -TERM "$runner"
wait "$runner" && rc=0 || rc=$?
expect_eq "$rc" 0 "daemon run exit on SIGTERM"
expect_in "$(cat "$T/systemd.out")" "STOPPING=1"
expect_no_stack

finish
