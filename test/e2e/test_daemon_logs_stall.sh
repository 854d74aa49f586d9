# A stalled log disk never holds a child: with the component's log file a
# FIFO that nobody reads (the writer thread hangs in open), a child writing
# 200,000 lines still gets them all out; the lines that found no room are
# dropped (and counted: test_logstore checks the note).
. "$(dirname "$0")/lib.sh"
helper_stack "lines 200000 100 1 $T/done"
cat >>"$STIGMER_HOME/config.ini" <<EOC
notify = no
settle = 50ms
EOC
mkdir -p "$STIGMER_HOME/logs"
mkfifo "$STIGMER_HOME/logs/agent-runner.log"

case_ "the child is not held by a hung writer"
run "$STIGMER_BIN" daemon start
expect_rc 0
wait_for 60 test -e "$T/done" && pass || fail "the child did not get its lines out"
expect_eq "$(comp agent-runner state)" ready

case_ "the supervisor answers meanwhile, and stops once the disk works"
run timeout 5 "$STIGMER_BIN" daemon status
expect_rc 0
# Unblock the writer (it waits in open() for a reader), then stop.
timeout 60 cat "$STIGMER_HOME/logs/agent-runner.log" >"$T/fifo.out" &
STG_BG_PIDS="$!"
run timeout 60 "$STIGMER_BIN" daemon stop
expect_rc 0
expect_no_stack
n=0
for f in "$T/fifo.out" "$STIGMER_HOME"/logs/agent-runner.log*; do
	[ -f "$f" ] && n=$((n + $(grep -c ' out line ' "$f")))
done
[ "$n" -lt 200000 ] && pass || fail "every line written although the writer hung ($n)"

finish
