# A supervisor killed with SIGKILL leaves no stack behind after the next
# start, and a recycled pid in children.json is never signalled.
. "$(dirname "$0")/lib.sh"

case_ "kill -9 of the supervisor, then start: no survivor of the old stack"
helper_stack "grandchild $T/gc.pid"
# The grandchild ignores SIGTERM: a short stop timeout keeps the test short.
printf '[supervisor]\nstop_timeout = 300ms\n' >>"$STIGMER_HOME/config.ini"
run "$STIGMER_BIN" daemon start
expect_rc 0
old_sup=$(sup_pid)
child=$(comp agent-runner pid)
wait_for 5 test -s "$T/gc.pid"
gc=$(cat "$T/gc.pid")
kill -9 "$old_sup"
wait_for 5 sh -c "! kill -0 $old_sup 2>/dev/null || grep -q '^[0-9]* ([^)]*) Z' /proc/$old_sup/stat"
rm -f "$T/gc.pid"
run "$STIGMER_BIN" daemon start
expect_rc 0
alive "$child" && fail "old child survived" || pass
alive "$gc" && fail "old grandchild survived" || pass
expect_in "$(cat "$STIGMER_HOME/logs/supervisor.log")" "leftover"
run "$STIGMER_BIN" daemon stop
expect_no_stack

case_ "an unrelated process whose pid is in children.json is untouched"
run "$STIGMER_BIN" daemon start
expect_rc 0
sup=$(sup_pid)
sleep 1000 &
victim=$!
STG_BG_PIDS="$victim"
kill -9 "$sup"
wait_for 5 sh -c "! kill -0 $sup 2>/dev/null || grep -q '^[0-9]* ([^)]*) Z' /proc/$sup/stat"
# Plant the victim as if it were the old agent-runner (its start time
# differs from the recorded one), and as a session leader's pid.
jq -c --argjson v "$victim" '. + [{"component":"workflow-runner","pid":$v,"start_time":1}]' \
	"$STIGMER_HOME/run/children.json" >"$T/children.json"
mv "$T/children.json" "$STIGMER_HOME/run/children.json"
run "$STIGMER_BIN" daemon start
expect_rc 0
alive "$victim" && pass || fail "unrelated process was killed"
run "$STIGMER_BIN" daemon stop
alive "$victim" && pass || fail "unrelated process killed at stop"
kill "$victim"
expect_no_stack

finish
