# stigmer daemon logs without a running supervisor: reads the files in
# $STIGMER_HOME/logs (rotated ones too), merges by capture time, prefixes
# names padded to one width, -n, --since, colours only on a terminal.
. "$(dirname "$0")/lib.sh"

logs() { run "$STIGMER_BIN" daemon logs "$@"; }

L="$STIGMER_HOME/logs"
mkdir -p "$L"
printf '%s\n' \
	"2026-11-21T05:00:00.000001Z 10 out s1" \
	"2026-11-21T05:00:02.000000Z 10 out s2" >"$L/server.log.1"
printf '%s\n' \
	"2026-11-21T05:00:04.000000Z 11 err s3" \
	"2026-11-21T05:00:06.000000Z 11 out s4" >"$L/server.log"
printf '%s\n' \
	"2026-11-21T05:00:01.000000Z 20 out w1" \
	"2026-11-21T05:00:05.000000Z 20 out w2" >"$L/workflow-runner.log"
printf '%s\n' \
	"2026-11-21T05:00:03.000000Z info  supervisor: started" >"$L/supervisor.log"

case_ "merged by capture time, across rotated files, names padded"
logs
expect_rc 0
expect_eq "$out" "server          | s1
workflow-runner | w1
server          | s2
supervisor      | info  supervisor: started
server          | s3
workflow-runner | w2
server          | s4" "merged output"
expect_not_in "$out" $'\033'

case_ "one component: its own width"
logs server
expect_rc 0
expect_eq "$out" "server | s1
server | s2
server | s3
server | s4" "server only"
logs workflow-runner server
expect_rc 0
expect_eq "$(printf '%s\n' "$out" | head -2)" "server          | s1
workflow-runner | w1" "two components"

case_ "-n: the last N of each component"
logs -n 1
expect_rc 0
expect_eq "$out" "supervisor      | info  supervisor: started
workflow-runner | w2
server          | s4" "-n 1"
logs -n1 server
expect_eq "$out" "server | s4" "-n1"
logs --tail=0
expect_rc 0
expect_eq "$out" "" "--tail=0"

case_ "--since"
logs --since 2026-11-21T05:00:04Z
expect_rc 0
expect_eq "$out" "server          | s3
workflow-runner | w2
server          | s4" "--since"
logs --since "2026-11-21 05:00:04" -n 1
expect_eq "$out" "workflow-runner | w2
server          | s4" "--since with -n"
logs --since=1m
expect_rc 0
expect_eq "$out" "" "--since 1m: nothing that recent"

case_ "the default is the last 100 lines"
for i in $(seq 1 150); do
	printf '2026-11-21T06:00:00.%06dZ 30 out a%d\n' "$i" "$i"
done >"$L/agent-runner.log"
logs agent-runner
expect_eq "$(printf '%s\n' "$out" | wc -l | tr -d ' ')" 100 "default tail"
expect_eq "$(printf '%s\n' "$out" | head -1)" "agent-runner | a51" "first of the default tail"
logs agent-runner --since 2026-11-21T05:59:00Z
expect_eq "$(printf '%s\n' "$out" | wc -l | tr -d ' ')" 150 "--since without -n: all"
rm "$L/agent-runner.log"

case_ "colours on a terminal only; NO_COLOR and --no-color respected"
if script -qec true /dev/null >/dev/null 2>&1; then
	tty_out=$(script -qec "$STIGMER_BIN daemon logs -n 1 server" /dev/null </dev/null)
	expect_in "$tty_out" $'\033[36mserver\033[0m | s4'
	tty_out=$(script -qec "$STIGMER_BIN daemon logs -n 1" /dev/null </dev/null)
	expect_in "$tty_out" $'\033[35mworkflow-runner\033[0m | w2'
	tty_out=$(script -qec "$STIGMER_BIN daemon logs --no-color -n 1 server" /dev/null </dev/null)
	expect_not_in "$tty_out" $'\033'
	expect_in "$tty_out" "server | s4"
	tty_out=$(NO_COLOR=1 script -qec "$STIGMER_BIN daemon logs -n 1 server" /dev/null </dev/null)
	expect_not_in "$tty_out" $'\033'
else
	echo "skipped: no script(1) to make a terminal"
fi

case_ "-f without a supervisor prints the files and says so"
logs -f -n 1 server
expect_rc 0
expect_eq "$out" "server | s4" "-f output"
expect_in "$err" "not running"

case_ "usage errors exit 2"
logs nosuch
expect_rc 2
expect_in "$err" "unknown component 'nosuch'"
logs -n many
expect_rc 2
logs --since yesterday
expect_rc 2
expect_in "$err" "--since"
logs --bogus
expect_rc 2
logs -n
expect_rc 2

case_ "no logs at all is no error"
rm -rf "$L"
logs
expect_rc 0
expect_eq "$out" "" "empty"

finish
