# Stop: a child that ignores SIGTERM is killed after the timeout, and so is
# its grandchild; nothing restarts while stopping.
. "$(dirname "$0")/lib.sh"

case_ "ignore-term child and its grandchild are killed after stop_timeout"
helper_stack "grandchild $T/gc.pid"
cat >>"$STIGMER_HOME/config.ini" <<EOC
[supervisor]
stop_timeout = 300ms
EOC
run "$STIGMER_BIN" daemon start
expect_rc 0
child=$(comp agent-runner pid)
wait_for 5 test -s "$T/gc.pid"
gc=$(cat "$T/gc.pid")
alive "$gc" && pass || fail "no grandchild"
expect_eq "$(ps -o pgid= -p "$gc" | tr -d ' ')" "$child" "grandchild in the child's group"
expect_eq "$(ps -o pgid= -p "$child" | tr -d ' ')" "$child" "child leads its group"
run "$STIGMER_BIN" daemon stop
expect_rc 0
alive "$gc" && fail "grandchild survived" || pass
alive "$child" && fail "child survived" || pass
expect_in "$(cat "$STIGMER_HOME/logs/agent-runner.log")" "sending SIGKILL to process group $child"
expect_no_stack

case_ "a child ignoring SIGTERM itself"
helper_stack "ignore-term"
run "$STIGMER_BIN" --set supervisor.stop_timeout=300ms --set component.agent-runner.notify=no --set supervisor.settle=50ms daemon start
expect_rc 0
child=$(comp agent-runner pid)
run "$STIGMER_BIN" daemon stop
expect_rc 0
alive "$child" && fail "child survived" || pass
expect_eq "$(grep -c 'started (pid' "$STIGMER_HOME/logs/agent-runner.log")" 2 "no restart while stopping (one start per case)"
expect_no_stack

finish
