# Ten concurrent `daemon start`: one supervisor, every start succeeds.
. "$(dirname "$0")/lib.sh"
helper_stack "notify-ready"

case_ "ten concurrent starts make one supervisor"
pids=""
for i in 0 1 2 3 4 5 6 7 8 9; do
	"$STIGMER_BIN" daemon start >"$T/start.$i.out" 2>&1 &
	pids="$pids $!"
done
fails=0
for p in $pids; do wait "$p" || fails=$((fails + 1)); done
expect_eq "$fails" 0 "failed starts"
n=$(pgrep -fc "agent-runner-supervisor --home $STIGMER_HOME ")
expect_eq "$n" 1 "supervisors"
expect_eq "$(comp agent-runner state)" ready
expect_eq "$(comp agent-runner restarts)" 0 restarts
expect_eq "$(comp_procs agent-runner | wc -l)" 1 "agent-runners"
run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_no_stack

finish
