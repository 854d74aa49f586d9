# The misbehaving-children helper does what the supervisor tests rely on.
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}

case_ "exit N"
run "$H" exit 7
expect_rc 7

case_ "crash by signal"
"$H" crash 11 2>/dev/null && rc=0 || rc=$?
expect_eq "$rc" 139 "exit of a SIGSEGV death"

case_ "ignore-term needs SIGKILL"
"$H" ignore-term >"$T/it.out" &
p=$!
wait_for 5 grep -q ignoring "$T/it.out"
kill -TERM "$p"; sleep 0.2
if kill -0 "$p" 2>/dev/null; then pass; else fail "died on SIGTERM"; fi
kill -KILL "$p"; wait "$p" 2>/dev/null

case_ "lines N writes numbered lines"
"$H" lines 1000 >"$T/lines.out" &
p=$!
wait_for 5 test "$(wc -l <"$T/lines.out")" = 1000
kill -TERM "$p"; wait "$p" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit on SIGTERM"
expect_eq "$(sed -n 1000p "$T/lines.out")" "line 00001000"

case_ "grandchild survives SIGTERM to its parent"
"$H" grandchild "$T/gc.pid" &
p=$!
wait_for 5 test -s "$T/gc.pid"
gc=$(cat "$T/gc.pid")
kill -TERM "$p"; wait "$p"
sleep 0.1
if kill -0 "$gc" 2>/dev/null; then pass; else fail "grandchild gone"; fi
kill -KILL "$gc"

finish
