# Restart policy: kill -9 restarts and is counted; a crash loop ends in
# failed; restart brings it back; ready timeout and watchdog kill.
. "$(dirname "$0")/lib.sh"
fast="--set restart.backoff_initial=20ms --set restart.backoff_max=200ms"

case_ "kill -9 restarts the component and status counts it"
helper_stack "notify-ready"
run "$STIGMER_BIN" $fast daemon start
expect_rc 0
for i in 1 2 3; do
	old=$(comp agent-runner pid)
	kill -9 "$old"
	wait_for 10 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].state')\" = ready ] && [ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].pid')\" != $old ]" && pass || fail "not ready again after kill $i"
done
expect_eq "$(comp agent-runner restarts)" 3 restarts
expect_eq "$(comp agent-runner last_exit.signal)" 9 "last exit signal"
printf '%s' "$(comp agent-runner last_exit.at)" | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' && pass || fail "last_exit.at"
expect_eq "$(zombies_of "$(sup_pid)")" "" zombies
run "$STIGMER_BIN" daemon stop
expect_rc 0

case_ "a crash loop ends in failed after the cap"
helper_stack "exit 3"
before=$(grep -c "started (pid" "$STIGMER_HOME/logs/agent-runner.log")
run "$STIGMER_BIN" $fast --set restart.max_restarts=4 daemon start
expect_rc 1
expect_in "$err" "agent-runner"
expect_in "$err" "exited with status 3"
wait_for 20 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].state')\" = failed ]" && pass || fail "never failed"
expect_eq "$(comp agent-runner restarts)" 4 restarts
expect_in "$(comp agent-runner reason)" "more than 4 restarts"
run "$STIGMER_BIN" daemon status
expect_rc 1
expect_in "$out" "failed"
c=$(grep -c "started (pid" "$STIGMER_HOME/logs/agent-runner.log")
expect_eq "$((c - before))" 5 "starts in the log"
sleep 0.5
expect_eq "$(($(grep -c "started (pid" "$STIGMER_HOME/logs/agent-runner.log") - before))" 5 "no start after failed"

case_ "daemon restart COMPONENT brings a failed one back"
helper_stack "notify-ready"
# The config is read at start; the restart keeps the running config, so the
# mode stays "exit 3": started again with its count reset, it fails again
# after the same 1 + 4 starts.
run "$STIGMER_BIN" daemon restart agent-runner
wait_for 20 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].state')\" = failed ]" && pass || fail "not failed again"
expect_eq "$(($(grep -c "started (pid" "$STIGMER_HOME/logs/agent-runner.log") - before))" 10 "starts after the restart"
expect_eq "$(comp agent-runner restarts)" 8 "restarts counted (4 + 4)"
run "$STIGMER_BIN" daemon restart no-such-thing
expect_rc 2
run "$STIGMER_BIN" daemon stop
expect_rc 0

case_ "SIGHUP reloads the config"
helper_stack "exit 3"
run "$STIGMER_BIN" $fast --set restart.max_restarts=2 daemon start
wait_for 20 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].state')\" = failed ]" && pass || fail "never failed"
helper_stack "notify-ready"
kill -HUP "$(sup_pid)"
wait_for 5 grep -q "configuration reloaded" "$STIGMER_HOME/logs/supervisor.log" && pass || fail "no reload"
run "$STIGMER_BIN" daemon restart agent-runner
expect_rc 0
expect_eq "$(comp agent-runner state)" ready
run "$STIGMER_BIN" daemon stop

case_ "not ready within ready_timeout: killed, counted"
helper_stack "never-ready"
run "$STIGMER_BIN" $fast --set component.agent-runner.ready_timeout=200ms daemon start
expect_rc 1
wait_for 10 grep -q "not ready within 200ms; killed" "$STIGMER_HOME/logs/agent-runner.log" && pass || fail "no ready timeout"
wait_for 10 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].restarts')\" -ge 1 ]" && pass || fail "not counted"
run "$STIGMER_BIN" daemon stop
expect_no_stack

case_ "notify = no: ready after settle"
helper_stack "sleep"
run "$STIGMER_BIN" --set component.agent-runner.notify=no --set supervisor.settle=100ms daemon start
expect_rc 0
expect_eq "$(comp agent-runner state)" ready
run "$STIGMER_BIN" daemon stop

case_ "a silent watchdog kills and restarts"
helper_stack "watchdog 3 50"
run "$STIGMER_BIN" $fast --set component.agent-runner.watchdog=400ms daemon start
expect_rc 0
wait_for 10 grep -q "watchdog: no WATCHDOG=1 for 400ms; killed" "$STIGMER_HOME/logs/agent-runner.log" && pass || fail "no watchdog kill"
wait_for 10 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].restarts')\" -ge 1 ]" && pass || fail "not restarted"
run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_no_stack

finish
