# daemon start, status, stop: files, exit codes, nothing left behind.
. "$(dirname "$0")/lib.sh"
helper_stack "notify-ready"

case_ "status when not running exits 3"
run "$STIGMER_BIN" daemon status
expect_rc 3
expect_in "$out" "not running"
run "$STIGMER_BIN" daemon status --json
expect_rc 3
expect_eq "$(printf '%s' "$out" | jq -r .running)" false
run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_in "$out" "not running"

case_ "start returns with the stack ready"
run "$STIGMER_BIN" daemon start
expect_rc 0
expect_in "$out" "agent-runner"
expect_in "$out" "ready"
expect_eq "$(comp agent-runner state)" ready

case_ "files and modes"
expect_eq "$(stat -c %a "$STIGMER_HOME/run")" 700 "run/ mode"
expect_eq "$(stat -c %a "$STIGMER_HOME/run/supervisor.sock")" 600 "socket mode"
[ -S "$STIGMER_HOME/run/notify.sock" ] && pass || fail "no notify.sock"
pid=$(sup_pid)
[ -n "$pid" ] && alive "$pid" && pass || fail "pid file does not name a live supervisor"
expect_eq "$(jq -r '.[0].component' "$STIGMER_HOME/run/children.json")" agent-runner "children.json"
expect_eq "$(jq -r '.[0].pid' "$STIGMER_HOME/run/children.json")" "$(comp agent-runner pid)" "children.json pid"

case_ "status: json fields and exit 0"
run "$STIGMER_BIN" daemon status --json
expect_rc 0
expect_eq "$(printf '%s' "$out" | jq -r .supervisor.pid)" "$pid" "supervisor.pid"
for k in uptime_ms version; do
	printf '%s' "$out" | jq -e ".supervisor.$k != null" >/dev/null && pass || fail "no supervisor.$k"
done
for k in name state pid uptime_ms restarts ready last_exit status_text; do
	printf '%s' "$out" | jq -e ".components[2] | has(\"$k\")" >/dev/null && pass || fail "no components[].$k"
done
expect_eq "$(printf '%s' "$out" | jq -r '.components | length')" 3 "components"
run "$STIGMER_BIN" daemon status
expect_rc 0
expect_in "$out" "supervisor: pid $pid"

case_ "start again says it is running"
run "$STIGMER_BIN" daemon start
expect_rc 0
expect_in "$out" "already running"
expect_eq "$(sup_pid)" "$pid" "same supervisor"

case_ "a second supervisor refuses, naming the first"
run "$STIGMER_BIN" agent-runner-supervisor --home "$STIGMER_HOME"
expect_rc 1
expect_in "$err" "already running (pid $pid)"

case_ "no zombie while running"
expect_eq "$(zombies_of "$pid")" "" "zombies"

case_ "stop leaves nothing"
child=$(comp agent-runner pid)
run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_in "$out" "stopped"
alive "$pid" && fail "supervisor still alive" || pass
alive "$child" && fail "child still alive" || pass
for f in supervisor.sock supervisor.pid notify.sock children.json; do
	[ -e "$STIGMER_HOME/run/$f" ] && fail "run/$f left" || pass
done
expect_no_stack
expect_in "$(cat "$STIGMER_HOME/logs/agent-runner.log")" "stopping"

case_ "SIGTERM to the supervisor stops it the same way"
run "$STIGMER_BIN" daemon start
expect_rc 0
pid=$(sup_pid)
kill -TERM "$pid"
wait_for 20 sh -c "! kill -0 $pid 2>/dev/null || grep -q '^[0-9]* ([^)]*) Z' /proc/$pid/stat" && pass || fail "supervisor did not exit on SIGTERM"
expect_no_stack
[ -e "$STIGMER_HOME/run/supervisor.sock" ] && fail "socket left" || pass

finish
