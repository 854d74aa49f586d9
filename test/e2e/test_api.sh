# The API of internal-server (docs/api.md) driven by curl against the real
# binary: every endpoint, a whole task flow, long polls woken by events,
# lease lapse, cancel, abuse (malformed JSON, huge body and headers, idle
# clients, 1,000 connections, unknown ids), and durability across kill -9.
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || { echo "curl is required"; exit 1; }
command -v jq >/dev/null || { echo "jq is required"; exit 1; }
ulimit -n 4096 2>/dev/null || true

cat >"$STIGMER_HOME/config.ini" <<'EOC'
[server]
max_connections = 100
idle_timeout = 10s
EOC

srv=""
port=""
# start_server [ENV=VALUE...]: starts the server (port 0), waits for the
# store to be open, sets $srv and $port and $B.
start_server() {
	: >"$T/srv.log"
	env "$@" "$STIGMER_BIN" internal-server --listen 127.0.0.1:0 2>"$T/srv.log" &
	srv=$!
	STG_BG_PIDS="${STG_BG_PIDS:-} $srv"
	wait_for 15 grep -q "store .* open" "$T/srv.log" || fail "the server did not open its store: $(cat "$T/srv.log")"
	port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/srv.log" | head -n1)
	B="http://127.0.0.1:$port"
}
stop_server() {
	kill -TERM "$srv" 2>/dev/null
	wait "$srv" 2>/dev/null || true
}

# api METHOD PATH [JSON]: sets $code and $body.
api() {
	local data=()
	[ $# -ge 3 ] && data=(--data-binary "$3" -H 'Content-Type: application/json')
	code=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 70 -X "$1" "${data[@]}" "$B$2") || code="curl-failed"
	body=$(cat "$T/body" 2>/dev/null)
}
expect_code() { expect_eq "$code" "$1" "${2:-HTTP status} (body: $body)"; }
j() { printf '%s' "$body" | jq -r "$1"; }

# bg_api NAME METHOD PATH [JSON]: the same in the background; results in
# $T/NAME.code and $T/NAME.body; sets $bg.
bg_api() {
	local name=$1 data=()
	shift
	[ $# -ge 3 ] && data=(--data-binary "$3" -H 'Content-Type: application/json')
	(curl -s -o "$T/$name.body" -w '%{http_code}' --max-time 70 -X "$1" "${data[@]}" "$B$2" >"$T/$name.code.tmp"
		mv "$T/$name.code.tmp" "$T/$name.code") &
	bg=$!
}

WF='[workflow]
name = hello
description = says hello
input.who = world
input.target =
[step greet]
run = echo "hello $STIGMER_INPUT_WHO"
timeout = 30s
[step summarize]
agent = Summarize {{steps.greet.output}} for {{input.who}}
model = test-model
'
submit_body() { jq -cn --arg wf "$WF" --argjson in "$1" '{workflow: $wf, inputs: $in}'; }

start_server

case_ "health, readiness, version"
api GET /healthz
expect_code 200
expect_eq "$body" '{"status":"ok"}'
api GET /readyz
expect_code 200
expect_eq "$(j .status)" ready
api GET /v1/version
expect_code 200
expect_eq "$(j .schema)" 1 "schema"
expect_in "$body" '"version":'

case_ "submit: accepted, and refused with reasons"
api POST /v1/executions "$(submit_body '{"target":"t","who":"bob"}')"
expect_code 201
EX=$(j .id)
expect_eq "$(j .state)" pending
expect_eq "$(j .name)" hello
case "$EX" in ex_????????????????) pass ;; *) fail "id '$EX' is not ex_ + 16 hex" ;; esac
api POST /v1/executions "$(submit_body '{"who":"bob"}')"
expect_code 400 "a required input missing"
expect_in "$(j .error.message)" "inputs.target: required"
api POST /v1/executions "$(submit_body '{"target":"t","whom":"x"}')"
expect_code 400 "an unknown input"
expect_in "$(j .error.message)" "inputs.whom"
api POST /v1/executions "$(submit_body '{"target":1}')"
expect_code 400 "a non-string input"
api POST /v1/executions "$(jq -cn '{workflow: "[workflow]\nname = x\n[step a]\nrun = true\ntimeout = soon\n"}')"
expect_code 400 "a bad workflow"
expect_in "$(j .error.message)" "workflow:5: [step a] timeout: expected a duration"
expect_eq "$(j .error.code)" bad_request
api POST /v1/executions '{"inputs": {}}'
expect_code 400 "no workflow"
expect_in "$(j .error.message)" "workflow: required"

case_ "list and get"
api GET "/v1/executions?limit=5"
expect_code 200
expect_eq "$(j '.executions[0].id')" "$EX"
expect_eq "$(j '.executions[0].started_at')" null
api GET "/v1/executions?state=running"
expect_code 200
expect_eq "$(j '.executions | length')" 0
api GET "/v1/executions?state=bogus"
expect_code 400
api GET "/v1/executions?limit=0"
expect_code 400
api GET "/v1/executions/$EX"
expect_code 200
expect_eq "$(j .inputs.who)" bob
expect_eq "$(j .inputs.target)" t
expect_eq "$(j '.steps | map(.name) | join(",")')" "greet,summarize"
expect_eq "$(j '.steps[1].kind')" agent
api GET /v1/executions/ex_0000000000000000
expect_code 404
expect_eq "$(j .error.code)" not_found

case_ "claim: nothing of a kind is 204"
api POST /v1/tasks/claim '{"kind":"agent","worker":"a1"}'
expect_code 204

case_ "an events long poll is woken by the claim (execution_started)"
bg_api ev1 GET "/v1/executions/$EX/events?after=0&wait=30s"
ev1=$bg
sleep 0.3
[ -e "$T/ev1.code" ] && fail "the long poll answered before anything happened: $(cat "$T/ev1.body")" || pass

case_ "the whole task flow"
api POST /v1/tasks/claim '{"kind":"workflow","worker":"w1","wait":"1s"}'
expect_code 200
TK=$(j .task.id)
expect_eq "$(j .task.kind)" workflow
expect_eq "$(j .task.execution_id)" "$EX"
expect_eq "$(j .task.payload.inputs.who)" bob
expect_in "$(j .task.payload.definition)" "[step greet]"
expect_eq "$(j '.task.payload.steps[0].state')" pending
wait_for 10 test -e "$T/ev1.code" || fail "the events long poll was not woken"
expect_eq "$(cat "$T/ev1.code")" 200 "woken long poll"
expect_eq "$(jq -r '.events[0].type' "$T/ev1.body")" execution_started
api GET "/v1/executions/$EX"
expect_eq "$(j .state)" running
api POST "/v1/tasks/$TK/heartbeat" '{"worker":"w1"}'
expect_code 200
expect_eq "$(j .cancelled)" false
expect_eq "$(j .lease_ms)" 30000

bg_api ev2 GET "/v1/executions/$EX/events?after=1&wait=30s"
api POST "/v1/tasks/$TK/events" '{"worker":"w1","events":[{"type":"step_started","step":"greet"},{"type":"output","step":"greet","stream":"out","line":"hello bob"}]}'
expect_code 200
expect_eq "$(j .next)" 3
wait_for 10 test -e "$T/ev2.code" || fail "the events long poll was not woken by new events"
expect_eq "$(jq -r '[.events[].type] | join(",")' "$T/ev2.body")" "step_started,output"
expect_eq "$(jq -r '.events[1].line' "$T/ev2.body")" "hello bob"
api POST "/v1/tasks/$TK/events" '{"worker":"w1","events":[{"type":"step_finished","step":"greet","state":"succeeded","exit_code":0,"output":"hello bob\n"}]}'
expect_code 200
api POST "/v1/tasks/$TK/events" '{"worker":"w1","events":[{"type":"step_started","step":"greet"}]}'
expect_code 409 "a succeeded step never runs twice"
api POST "/v1/tasks/$TK/events" '{"worker":"w1","events":[{"type":"step_started","step":"nope"}]}'
expect_code 400 "an unknown step"
api POST "/v1/tasks/$TK/events" '{"worker":"w1","events":[{"type":"bogus","step":"greet"}]}'
expect_code 400 "an unknown event type"
api POST "/v1/tasks/$TK/events" '{"worker":"w2","events":[]}'
expect_code 409 "events from a worker without the lease"

# the agent step, through an agent task
api POST /v1/tasks "$(jq -cn --arg ex "$EX" '{kind:"agent", execution_id:$ex, step:"summarize", prompt:"Summarize hello bob", model:"test-model", timeout_ms:5000}')"
expect_code 201
AT=$(j .id)
api POST /v1/tasks "$(jq -cn --arg ex "$EX" '{kind:"agent", execution_id:$ex, step:"greet", prompt:"x"}')"
expect_code 400 "an agent task for a run step"
bg_api tw GET "/v1/tasks/$AT?wait=30s"
api POST /v1/tasks/claim '{"kind":"agent","worker":"a1"}'
expect_code 200
expect_eq "$(j .task.id)" "$AT"
expect_eq "$(j .task.payload.prompt)" "Summarize hello bob"
expect_eq "$(j .task.payload.model)" test-model
expect_eq "$(j .task.payload.timeout_ms)" 5000
sleep 0.2
[ -e "$T/tw.code" ] && fail "GET task ?wait answered before the task finished" || pass
api POST "/v1/tasks/$AT/complete" '{"worker":"a1","state":"succeeded","output":"a greeting"}'
expect_code 200
wait_for 10 test -e "$T/tw.code" || fail "GET task ?wait was not woken by completion"
expect_eq "$(jq -r .state "$T/tw.body")" succeeded
expect_eq "$(jq -r .output "$T/tw.body")" "a greeting"
api GET "/v1/tasks/$AT"
expect_code 200
expect_eq "$(j .kind)" agent
api POST "/v1/tasks/$TK/events" '{"worker":"w1","events":[{"type":"step_started","step":"summarize"},{"type":"step_finished","step":"summarize","state":"succeeded","exit_code":null,"output":"a greeting"}]}'
expect_code 200
api POST "/v1/tasks/$TK/complete" '{"worker":"w1","state":"succeeded"}'
expect_code 200
api POST "/v1/tasks/$TK/complete" '{"worker":"w1","state":"succeeded"}'
expect_code 409 "completing twice"
api GET "/v1/executions/$EX"
expect_eq "$(j .state)" succeeded
expect_eq "$(j '.steps[0].output')" "hello bob"
expect_eq "$(j '.steps[0].exit_code')" 0
expect_eq "$(j '.steps[1].output')" "a greeting"
[ "$(j .finished_at)" != null ] && pass || fail "finished_at is null"
api GET "/v1/executions/$EX/events?after=0"
expect_code 200
expect_eq "$(j '[.events[].type] | join(",")')" \
	"execution_started,step_started,output,step_finished,step_started,step_finished,execution_finished"
expect_eq "$(j '[.events[].seq] | join(",")')" "1,2,3,4,5,6,7"
expect_eq "$(j .finished)" true
expect_eq "$(j .next)" 7
api GET "/v1/executions/$EX/events?after=7&wait=30s"
expect_code 200 "a finished execution's long poll answers at once"
expect_eq "$(j '.events | length')" 0
expect_eq "$(j .finished)" true
api POST "/v1/executions/$EX/cancel"
expect_code 409 "cancelling a finished execution"
expect_eq "$(j .error.code)" conflict

case_ "a claim long poll is woken by a submit"
bg_api cl POST /v1/tasks/claim '{"kind":"workflow","worker":"w3","wait":"30s"}'
sleep 0.2
api POST /v1/executions "$(submit_body '{"target":"t"}')"
expect_code 201
EX2=$(j .id)
wait_for 10 test -e "$T/cl.code" || fail "the claim long poll was not woken by a submit"
expect_eq "$(cat "$T/cl.code")" 200
expect_eq "$(jq -r .task.execution_id "$T/cl.body")" "$EX2"
TK2=$(jq -r .task.id "$T/cl.body")

case_ "cancel: a running task learns it from its heartbeat; pending tasks are cancelled"
bg_api ev3 GET "/v1/executions/$EX2/events?after=1&wait=30s"
api POST "/v1/executions/$EX2/cancel"
expect_code 200
expect_eq "$(j .state)" cancelled
wait_for 10 test -e "$T/ev3.code" || fail "cancel did not wake the events long poll"
expect_eq "$(jq -r '.events[-1].type' "$T/ev3.body")" execution_finished
expect_eq "$(jq -r '.events[-1].state' "$T/ev3.body")" cancelled
expect_eq "$(jq -r .finished "$T/ev3.body")" true
api POST "/v1/tasks/$TK2/heartbeat" '{"worker":"w3"}'
expect_code 200
expect_eq "$(j .cancelled)" true
api POST "/v1/tasks/$TK2/release" '{"worker":"w3"}'
expect_code 200
api GET "/v1/tasks/$TK2"
expect_eq "$(j .state)" cancelled
api POST /v1/executions "$(submit_body '{"target":"t"}')"
EX3=$(j .id)
api POST "/v1/executions/$EX3/cancel"
expect_code 200
api POST /v1/tasks/claim '{"kind":"workflow","worker":"w3"}'
expect_code 204 "the cancelled execution's task is not claimable"
api GET "/v1/executions/$EX3"
expect_eq "$(j '[.steps[].state] | join(",")')" "cancelled,cancelled"

case_ "release puts a task back at once"
api POST /v1/executions "$(submit_body '{"target":"t"}')"
EX4=$(j .id)
api POST /v1/tasks/claim '{"kind":"workflow","worker":"w4"}'
TK4=$(j .task.id)
api POST "/v1/tasks/$TK4/release" '{"worker":"w5"}'
expect_code 409 "release by another worker"
api POST "/v1/tasks/$TK4/release" '{"worker":"w4"}'
expect_code 200
api POST /v1/tasks/claim '{"kind":"workflow","worker":"w5"}'
expect_code 200
expect_eq "$(j .task.id)" "$TK4"
api POST "/v1/tasks/$TK4/complete" '{"worker":"w5","state":"failed","error":"it broke"}'
expect_code 200
api GET "/v1/executions/$EX4"
expect_eq "$(j .state)" failed
expect_eq "$(j .error)" "it broke"

case_ "unknown ids, routes and methods"
api GET /v1/tasks/tk_0000000000000000
expect_code 404
api POST /v1/tasks/tk_0000000000000000/heartbeat '{"worker":"w"}'
expect_code 404
api GET /v1/executions/ex_0000000000000000/events
expect_code 404
api POST /v1/executions/ex_0000000000000000/cancel
expect_code 404
api GET /v1/nothing
expect_code 404
api DELETE /v1/executions
expect_code 405
api GET "/v1/executions/$EX/cancel"
expect_code 405
api POST /v1/tasks/claim '{"kind":"robot","worker":"w"}'
expect_code 400
expect_in "$(j .error.message)" "kind"
api POST /v1/tasks/claim '{"kind":"workflow"}'
expect_code 400
expect_in "$(j .error.message)" "worker: required"
api GET "/v1/executions/$EX/events?wait=forever"
expect_code 400

case_ "malformed JSON, a huge body, huge headers: answered, the server still serves"
api POST /v1/executions '{"workflow": '
expect_code 400
expect_in "$(j .error.message)" "malformed JSON"
api POST /v1/executions '[1,2]'
expect_code 400
head -c 2097152 /dev/zero | tr '\0' a >"$T/big"
code=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 20 -X POST --data-binary @"$T/big" "$B/v1/executions")
expect_eq "$code" 413 "a 2 MiB body"
code=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 20 -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)" "$B/healthz")
expect_eq "$code" 431 "20 KB of headers"
api GET /healthz
expect_code 200

case_ "1,000 connections against max_connections = 100: refused, then serving again"
fds=()
for i in $(seq 1 1000); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$port" || break
	fds+=("$fd")
done
expect_eq "${#fds[@]}" 1000 "connections opened"
last=${fds[-1]}
resp=$(timeout 10 cat <&"$last") || true
expect_in "$resp" "503 Service Unavailable"
expect_in "$resp" "too_many_connections"
for fd in "${fds[@]}"; do exec {fd}<&-; done
wait_for 20 sh -c "curl -sf --max-time 2 '$B/healthz' >/dev/null" || fail "the server did not serve again"
api GET /readyz
expect_code 200

case_ "a lapsed lease puts the task back; a waiting claim is woken; the old worker gets 409"
stop_server
start_server STIGMER_SERVER_LEASE=1s STIGMER_SERVER_IDLE_TIMEOUT=1s
case_ "an idle client is closed after idle_timeout"
exec 3<>"/dev/tcp/127.0.0.1/$port"
timeout 10 cat <&3 >/dev/null && rc=0 || rc=$?
exec 3<&-
expect_eq "$rc" 0 "the idle connection was closed by the server (124 means it was not)"

api POST /v1/executions "$(submit_body '{"target":"t"}')"
EX5=$(j .id)
api POST /v1/tasks/claim '{"kind":"workflow","worker":"old"}'
expect_code 200
TK5=$(j .task.id)
expect_eq "$(j .task.lease_ms)" 1000
bg_api lapse POST /v1/tasks/claim '{"kind":"workflow","worker":"new","wait":"30s"}'
wait_for 15 test -e "$T/lapse.code" || fail "the waiting claim was not woken by the lapse"
expect_eq "$(cat "$T/lapse.code")" 200
expect_eq "$(jq -r .task.id "$T/lapse.body")" "$TK5"
api POST "/v1/tasks/$TK5/heartbeat" '{"worker":"old"}'
expect_code 409 "the old worker's heartbeat"
api POST "/v1/tasks/$TK5/events" '{"worker":"old","events":[]}'
expect_code 409 "the old worker's events"
expect_in "$(cat "$T/srv.log")" "lease lapsed"

case_ "kill -9 during 100 submits: every 201 survives the restart"
: >"$T/accepted"
(for i in $(seq 1 100); do
	c=$(curl -s -o "$T/sub.$i" -w '%{http_code}' --max-time 10 -X POST \
		--data-binary "$(submit_body '{"target":"t"}')" "$B/v1/executions") || true
	[ "$c" = 201 ] && jq -r .id "$T/sub.$i" >>"$T/accepted"
	sleep 0.05
done) &
subs=$!
wait_for 30 sh -c "[ \$(wc -l <'$T/accepted') -ge 30 ]" || fail "fewer than 30 submits accepted"
{ kill -9 "$srv"; wait "$srv"; } 2>/dev/null
wait "$subs" 2>/dev/null
n=$(wc -l <"$T/accepted")
[ "$n" -ge 30 ] && pass || fail "only $n submits accepted"
start_server
missing=0
while read -r id; do
	c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$B/v1/executions/$id")
	[ "$c" = 200 ] || { missing=$((missing + 1)); echo "missing after restart: $id ($c)"; }
done <"$T/accepted"
expect_eq "$missing" 0 "accepted executions lost"
api GET "/v1/executions/$EX"
expect_eq "$(j .state)" succeeded "an old execution after restart"

case_ "a database newer than the binary is refused with a clear error"
if command -v sqlite3 >/dev/null; then
	mkdir -p "$T/newer/data"
	sqlite3 "$T/newer/data/stigmer.db" "PRAGMA user_version = 999;"
	run timeout 20 "$STIGMER_BIN" internal-server --listen 127.0.0.1:0 --home "$T/newer"
	expect_rc 1
	expect_in "$err" "schema version 999, newer than this stigmer knows"
else
	echo "(no sqlite3 CLI: skipped)"
fi

case_ "SIGTERM answers long polls and exits 0"
bg_api last GET "/v1/executions/$EX5/events?after=100&wait=60s"
sleep 0.2
kill -TERM "$srv"
wait "$srv" && rc=0 || rc=$?
expect_eq "$rc" 0 "exit status"
wait_for 10 test -e "$T/last.code" || fail "the long poll was not answered on stop"
expect_eq "$(cat "$T/last.code")" 503

finish
