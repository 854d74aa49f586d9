# `stigmer run` and `stigmer executions` against a real daemon: the API
# server and the workflow runner, on a free port. Workflows that pass,
# fail, time out and are cancelled; hostile inputs; step outputs; a
# SIGKILLed runner; a stop in the middle of a step; agent steps answered
# by hand with curl.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
cat >"$STIGMER_HOME/config.ini" <<EOF
[server]
listen = 127.0.0.1:$PORT
lease = 1s
[component.agent-runner]
enabled = no
[component.workflow-runner]
stop_timeout = 4s
EOF
API="http://127.0.0.1:$PORT"
W="$T/wf"
mkdir -p "$W"

stg() { "$STIGMER_BIN" "$@"; }
# procs_with TEXT: pids whose command line contains TEXT (from /proc).
procs_with() {
	local c p
	for c in /proc/[0-9]*/cmdline; do
		p=${c#/proc/}
		p=${p%/cmdline}
		[ "$p" = "$$" ] || [ "$p" = "$BASHPID" ] && continue
		if { tr "\0" " " <"$c"; } 2>/dev/null | grep -qF -- "$1"; then
			alive "$p" && echo "$p"
		fi
	done
}
no_procs_with() { [ -z "$(procs_with "$1")" ]; }
has_procs_with() { [ -n "$(procs_with "$1")" ]; }
exec_field() { stg executions show "$1" --json | jq -r "$2"; }
exec_state() { exec_field "$1" .state; }
state_is() { [ "$(exec_state "$1")" = "$2" ]; }
step_state_is() { [ "$(exec_field "$1" ".steps[] | select(.name==\"$2\") | .state")" = "$3" ]; }
lines() { if [ -f "$1" ]; then grep -cx -- "$2" "$1"; else echo 0; fi; }
# Background commands run the binary itself, so $! is its pid.
S=$STIGMER_BIN

case_ "a bad workflow file names FILE:LINE and exits 2, before any daemon"
printf '[workflow]\nname = bad\n[step a]\nrun = true\ntimeout = soon\n' >"$W/bad.ini"
run stg run "$W/bad.ini"
expect_rc 2
expect_in "$err" "$W/bad.ini:5:"
[ ! -S "$STIGMER_HOME/run/supervisor.sock" ] && pass || fail "the daemon was started for a bad file"
printf '[workflow]\nname = x\ninput.need =\ninput.must\n[step a]\nrun = true\n' >"$W/bad2.ini"
run stg run "$W/bad2.ini"
expect_rc 2
run stg run "$W/nope.ini"
expect_rc 2
expect_in "$err" "nope.ini"
printf '[workflow]\nname = inp\ninput.who =\n[step a]\nrun = true\n' >"$W/inp.ini"
run stg run "$W/inp.ini"
expect_rc 2
expect_in "$err" "--input who=VALUE"
run stg run "$W/inp.ini" --input who=x --input other=y
expect_rc 2
expect_in "$err" "other"

case_ "a passing workflow: inputs, outputs of earlier steps, stderr, exit 0"
cat >"$W/ok.ini" <<'EOF'
[workflow]
name = hello
description = says hello
input.who = world

[step greet]
run = echo "hello $STIGMER_INPUT_WHO"; echo "to stderr" >&2

[step second]
run = echo "got [$STIGMER_STEP_GREET_OUTPUT] in $PWD with $GREETING"
cwd = /tmp
env.GREETING = hi there
EOF
run stg run "$W/ok.ini" --input who=you
expect_rc 0
expect_in "$err" "starting the daemon"
id=$(echo "$out" | head -n1)
case "$id" in ex_????????????????) pass ;; *) fail "first line is not an execution id: $id" ;; esac
expect_in "$out" "greet | hello you"
expect_in "$err" "greet | to stderr"
expect_in "$out" "second | got [hello you] in /tmp with hi there"
expect_in "$out" "step greet: succeeded"
expect_in "$out" "execution succeeded"
expect_eq "$(exec_state "$id")" succeeded "state"
expect_eq "$(exec_field "$id" '.steps[0].output')" "hello you" "output of greet"
expect_eq "$(exec_field "$id" '.steps[1].exit_code')" 0 "exit code of second"
run stg executions list --json
expect_rc 0
expect_eq "$(echo "$out" | jq -r '.[0].id')" "$id" "newest in the list"
run stg executions list --state succeeded
expect_in "$out" "$id"
expect_in "$out" "hello"
run stg executions logs "$id"
expect_rc 0
expect_in "$out" "greet | hello you"
expect_in "$out" "execution succeeded"

case_ "a failing step fails the execution; later steps are skipped and never run"
cat >"$W/fail.ini" <<EOF
[workflow]
name = failing
[step a]
run = echo a
[step b]
run = echo b; exit 3
[step c]
run = touch $T/c-ran
EOF
run stg run "$W/fail.ini"
expect_rc 1
id=$(echo "$out" | head -n1)
expect_in "$out" "step b: failed (exit code 3)"
expect_in "$out" "step c: skipped"
expect_in "$out" "execution failed: step b exited with status 3"
expect_eq "$(exec_state "$id")" failed "state"
expect_eq "$(exec_field "$id" '.steps[1].exit_code')" 3 "exit code of b"
expect_eq "$(exec_field "$id" '.steps[2].state')" skipped "state of c"
[ ! -e "$T/c-ran" ] && pass || fail "step c ran after b failed"
run stg executions cancel "$id"
expect_rc 1
expect_in "$err" "already finished"

case_ "much output: every line arrives, in order; long lines split; bad UTF-8 replaced"
cat >"$W/big.ini" <<'EOF'
[workflow]
name = big
[step lots]
run = seq 1 20000; head -c 20000 /dev/zero | tr '\0' x; echo; printf 'bad \377 utf8\n'; printf 'nul\000byte\n'
[step next]
run = echo "length ${#STIGMER_STEP_LOTS_OUTPUT}"
EOF
run stg run "$W/big.ini"
expect_rc 0
expect_eq "$(echo "$out" | sed -n 's/^lots | \([0-9][0-9]*\)$/\1/p' | tr '\n' ' ')" "$(seq 1 20000 | tr '\n' ' ')" "the numbered lines"
expect_eq "$(echo "$out" | grep -c '^lots | xxxx')" 3 "pieces of the 20000-byte line"
expect_in "$out" "lots | bad $(printf '\357\277\275') utf8"
expect_in "$out" "lots | nul$(printf '\357\277\275')byte"
expect_in "$out" "next | length 65536"

case_ "a step that times out is killed with its children"
cat >"$W/slow.ini" <<'EOF'
[workflow]
name = slow
[step s]
run = sh -c 'sleep 31.25' & sleep 31.5
timeout = 500ms
[step after]
run = echo never
EOF
run stg run "$W/slow.ini"
expect_rc 1
id=$(echo "$out" | head -n1)
expect_in "$out" "execution failed: step s timed out after 500ms"
expect_eq "$(exec_field "$id" '.steps[1].state')" skipped "state of after"
wait_for 15 no_procs_with "sleep 31.5" && pass || fail "the step's process is still running"
wait_for 15 no_procs_with "sleep 31.25" && pass || fail "the step's child is still running: $(procs_with "sleep 31.25")"

case_ "a step that ignores SIGTERM gets SIGKILL; one that exits 0 on it still timed out"
cat >"$W/stubborn.ini" <<'EOF'
[workflow]
name = stubborn
[step s]
run = trap '' TERM; sleep 31.75; echo done
timeout = 300ms
EOF
run stg run "$W/stubborn.ini"
expect_rc 1
expect_in "$out" "timed out after 300ms"
wait_for 15 no_procs_with "sleep 31.75" && pass || fail "the stubborn step still runs"
cat >"$W/polite.ini" <<'EOF'
[workflow]
name = polite
[step s]
run = trap 'exit 0' TERM; sleep 31.875 & wait
timeout = 300ms
EOF
run stg run "$W/polite.ini"
expect_rc 1
expect_in "$out" "execution failed: step s timed out after 300ms"

case_ "stigmer executions cancel stops the running step"
cat >"$W/long.ini" <<'EOF'
[workflow]
name = long
[step s]
run = echo started; sleep 32.5 & sleep 32.25; echo not-reached
[step after]
run = echo never
EOF
run stg run --detach "$W/long.ini"
expect_rc 0
id=$out
case "$id" in ex_????????????????) pass ;; *) fail "--detach printed '$id'" ;; esac
wait_for 30 has_procs_with "sleep 32.25" || fail "the step never started"
run stg executions cancel "$id"
expect_rc 0
expect_in "$out" "cancelled"
wait_for 15 no_procs_with "sleep 32.25" && pass || fail "the step still runs after cancel"
wait_for 15 no_procs_with "sleep 32.5" && pass || fail "the step's child still runs after cancel"
expect_eq "$(exec_state "$id")" cancelled "state"
wait_for 15 step_state_is "$id" s cancelled && pass || fail "step s: $(exec_field "$id" '.steps[0].state')"
run stg executions logs "$id"
expect_in "$out" "s | started"
expect_not_in "$out" "not-reached"

case_ "Ctrl-C on stigmer run cancels the execution and exits 130"
cat >"$W/long2.ini" <<'EOF'
[workflow]
name = long2
[step s]
run = echo started; sleep 33.5
EOF
# Not through the stg function: the signal must reach stigmer itself.
"$STIGMER_BIN" run "$W/long2.ini" >"$T/ctrlc.out" 2>"$T/ctrlc.err" &
pid=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $pid"
wait_for 30 grep -q "s | started" "$T/ctrlc.out" || fail "no output: $(cat "$T/ctrlc.out" "$T/ctrlc.err")"
kill -INT "$pid"
wait "$pid" && rc=0 || rc=$?
expect_eq "$rc" 130 "exit status after Ctrl-C"
id=$(head -n1 "$T/ctrlc.out")
expect_eq "$(exec_state "$id")" cancelled "state"
wait_for 15 no_procs_with "sleep 33.5" && pass || fail "the step still runs after Ctrl-C"

case_ "hostile inputs stay inert"
cat >"$W/hostile.ini" <<'EOF'
[workflow]
name = hostile
input.x =
[step show]
run = echo "$STIGMER_INPUT_X"
[step again]
run = printf '%s\n' "prev=$STIGMER_STEP_SHOW_OUTPUT"
EOF
h1="\$(touch $T/pwned1)"
h2="; touch $T/pwned2; \`touch $T/pwned3\` \" ' \\"
run stg run "$W/hostile.ini" --input "x=$h1"
expect_rc 0
expect_in "$out" "show | $h1"
expect_in "$out" "again | prev=$h1"
run stg run "$W/hostile.ini" --input "x=$h2"
expect_rc 0
expect_in "$out" "show | $h2"
for f in pwned1 pwned2 pwned3; do
	[ ! -e "$T/$f" ] && pass || fail "$f was created: an input was executed"
done

case_ "a SIGKILLed workflow runner: restarted, the lease lapses, no finished step runs again"
cat >"$W/kill.ini" <<EOF
[workflow]
name = killed
[step one]
run = echo one >>$T/count
[step two]
run = echo two-start >>$T/count; sleep 3; echo two >>$T/count
[step three]
run = echo three >>$T/count
EOF
"$S" run "$W/kill.ini" >"$T/kill.out" 2>"$T/kill.err" &
pid=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $pid"
wait_for 30 grep -qx two-start "$T/count" || fail "step two never started"
wr=$(comp workflow-runner pid)
kill -KILL "$wr"
wait "$pid" && rc=0 || rc=$?
expect_eq "$rc" 0 "stigmer run exit status"
expect_in "$(cat "$T/kill.out")" "execution succeeded"
expect_eq "$(lines "$T/count" one)" 1 "runs of step one"
expect_eq "$(lines "$T/count" three)" 1 "runs of step three"
# Step two was interrupted, so it ran again; the interrupted run was
# stopped when the new runner started, before it could finish.
expect_eq "$(lines "$T/count" two)" 1 "finished runs of step two"
[ "$(comp workflow-runner pid)" != "$wr" ] && pass || fail "the runner was not restarted"
expect_eq "$(comp workflow-runner restarts)" 1 "restarts"

case_ "a frozen runner (SIGSTOP) whose lease lapses: it carries on from the server's record"
cat >"$W/frozen.ini" <<EOF
[workflow]
name = frozen
[step a]
run = echo a >>$T/fcount
[step b]
run = echo b-start >>$T/fcount; sleep 2; echo b >>$T/fcount
[step c]
run = echo c >>$T/fcount
EOF
"$S" run "$W/frozen.ini" >"$T/frozen.out" 2>"$T/frozen.err" &
pid=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $pid"
wait_for 30 grep -qx b-start "$T/fcount" || fail "step b never started"
wr=$(comp workflow-runner pid)
kill -STOP "$wr"
sleep 2.5 # longer than the lease (1s): it lapses
kill -CONT "$wr"
wait "$pid" && rc=0 || rc=$?
expect_eq "$rc" 0 "stigmer run exit status"
expect_eq "$(lines "$T/fcount" a)" 1 "runs of a"
expect_eq "$(lines "$T/fcount" c)" 1 "runs of c"
expect_eq "$(comp workflow-runner pid)" "$wr" "the same runner"

case_ "a SIGKILLed server mid-step: the runner and stigmer run wait for it and finish"
cat >"$W/srvkill.ini" <<EOF
[workflow]
name = srvkill
[step a]
run = echo a-start >>$T/kcount; sleep 2; echo a >>$T/kcount
[step b]
run = echo b >>$T/kcount
EOF
"$S" run "$W/srvkill.ini" >"$T/srvkill.out" 2>"$T/srvkill.err" &
pid=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $pid"
wait_for 30 grep -qx a-start "$T/kcount" || fail "step a never started"
srv=$(comp server pid)
kill -KILL "$srv"
wait "$pid" && rc=0 || rc=$?
expect_eq "$rc" 0 "stigmer run exit status"
expect_in "$(cat "$T/srvkill.out")" "execution succeeded"
expect_eq "$(lines "$T/kcount" b)" 1 "runs of b"
[ "$(comp server pid)" != "$srv" ] && pass || fail "the server was not restarted"

case_ "agent steps: an agent task with the rendered prompt; its output feeds later steps"
cat >"$W/agent.ini" <<'EOF'
[workflow]
name = agentic
input.topic = bees
[step ask]
agent = Tell me about {{input.topic}}
model = tiny
timeout = 1m
[step use]
run = echo "answer: $STIGMER_STEP_ASK_OUTPUT"
EOF
"$S" run "$W/agent.ini" --input 'topic=$(rm -rf /)' >"$T/agent.out" 2>"$T/agent.err" &
pid=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $pid"
claim() {
	curl -s --max-time 20 -X POST "$API/v1/tasks/claim" \
		-d '{"kind":"agent","worker":"test","wait":"10s"}' >"$T/claim.json" &&
		[ "$(jq -r .task.id "$T/claim.json" 2>/dev/null)" != null ] &&
		[ -n "$(jq -r .task.id "$T/claim.json" 2>/dev/null)" ]
}
wait_for 60 claim || fail "no agent task to claim: $(cat "$T/claim.json")"
tk=$(jq -r .task.id "$T/claim.json")
expect_eq "$(jq -r .task.payload.prompt "$T/claim.json")" 'Tell me about $(rm -rf /)' "prompt"
expect_eq "$(jq -r .task.payload.model "$T/claim.json")" tiny "model"
expect_eq "$(jq -r .task.payload.timeout_ms "$T/claim.json")" 60000 "timeout_ms"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "$API/v1/tasks/$tk/complete" \
	-d '{"worker":"test","state":"succeeded","error":null,"output":"forty\ntwo"}')
expect_eq "$code" 200 "complete the agent task"
wait "$pid" && rc=0 || rc=$?
expect_eq "$rc" 0 "stigmer run exit status"
expect_in "$(cat "$T/agent.out")" "ask | forty"
expect_in "$(cat "$T/agent.out")" "use | answer: forty"
expect_in "$(cat "$T/agent.out")" "use | two"

case_ "a failed agent task fails its step"
"$S" run "$W/agent.ini" >"$T/agent2.out" 2>"$T/agent2.err" &
pid=$!
STG_BG_PIDS="${STG_BG_PIDS:-} $pid"
wait_for 60 claim || fail "no agent task to claim"
tk=$(jq -r .task.id "$T/claim.json")
curl -s -o /dev/null --max-time 10 -X POST "$API/v1/tasks/$tk/complete" \
	-d '{"worker":"test","state":"failed","error":"the model is on strike","output":null}'
wait "$pid" && rc=0 || rc=$?
expect_eq "$rc" 1 "stigmer run exit status"
expect_in "$(cat "$T/agent2.out")" "the model is on strike"
expect_in "$(cat "$T/agent2.out")" "step use: skipped"

case_ "stopping the daemon mid-step: the step is stopped, the task released, resumed later"
cat >"$W/stop.ini" <<EOF
[workflow]
name = stopped
[step a]
run = echo a >>$T/scount
[step b]
run = echo b-start >>$T/scount; sleep 34.5; echo b >>$T/scount
EOF
run stg run --detach "$W/stop.ini"
id=$out
wait_for 30 grep -qx b-start "$T/scount" || fail "step b never started"
run stg daemon stop
expect_rc 0
wait_for 10 no_procs_with "sleep 34.5" && pass || fail "step b still runs after the daemon stopped: $(ps -o pid,pgid,sid,stat,args -p "$(procs_with "sleep 34.5" | head -n1)"; tail -n 15 "$STIGMER_HOME/logs/workflow-runner.log")"
expect_no_stack
expect_eq "$(lines "$T/scount" a)" 1 "runs of a"
expect_in "$(cat "$STIGMER_HOME/logs/workflow-runner.log")" "released"
run stg daemon start
expect_rc 0
b_started_twice() { [ "$(lines "$T/scount" b-start)" = 2 ]; }
wait_for 30 b_started_twice || fail "step b did not run again"
expect_eq "$(lines "$T/scount" a)" 1 "runs of a after the restart"
run stg executions cancel "$id"
expect_rc 0

case_ "executions: usage and unknown ids"
run stg executions show ex_0000000000000000
expect_rc 1
expect_in "$err" "no such execution"
run stg executions show '../../healthz'
expect_rc 1
run stg executions list --state nonsense
expect_rc 2
run stg executions frobnicate
expect_rc 2

case_ "an idle runner makes no wakeups while its claim waits"
# Just restarted, so the 30s long poll does not end within the window.
run stg daemon restart workflow-runner
expect_rc 0
wr=$(comp workflow-runner pid)
sleep 0.5
w1=$(sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' "/proc/$wr/status")
sleep 1.5
w2=$(sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' "/proc/$wr/status")
expect_eq "$w2" "$w1" "voluntary context switches while idle"

case_ "[workflow-runner] concurrency: no more tasks at once"
printf '[workflow-runner]\nconcurrency = 2\n' >>"$STIGMER_HOME/config.ini"
run stg daemon restart workflow-runner
expect_rc 0
cat >"$W/conc.ini" <<EOF
[workflow]
name = conc
[step s]
run = echo "\$STIGMER_EXECUTION_ID" >>$T/conc; sleep 4
EOF
ids=""
for i in 1 2 3; do
	run stg run --detach "$W/conc.ini"
	ids="$ids $out"
done
two_started() { [ "$(lines_any "$T/conc")" -ge 2 ]; }
lines_any() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
wait_for 30 two_started || fail "two executions did not start"
expect_eq "$(lines_any "$T/conc")" 2 "executions running at once"
expect_eq "$(stg executions list --state pending --json | jq length)" 1 "pending executions"
all_done() { for x in $ids; do state_is "$x" succeeded || return 1; done; }
wait_for 60 all_done || fail "not all finished"
expect_eq "$(lines_any "$T/conc")" 3 "executions run"

run stg daemon stop
expect_no_stack

case_ "no sanitizer reports in the components' logs (sanitized builds)"
bad=$(grep -l "Sanitizer\|runtime error:" "$STIGMER_HOME"/logs/*.log* 2>/dev/null)
[ -z "$bad" ] && pass || fail "sanitizer reports in: $bad: $(grep -h -A5 "Sanitizer\|runtime error:" $bad | head -20)"
finish
