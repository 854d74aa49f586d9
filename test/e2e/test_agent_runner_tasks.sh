# The reference agent-runner's agent tasks (cmd/agent-runner): it claims a
# task from the server, asks the chat model, and completes the task with the
# reply or an error. The model is the helper's fake-llm; the server is the
# helper's fake-tasks (the task endpoints of docs/api.md), both on free
# loopback ports. The last case runs the real daemon, whose agent-runner is
# the embedded payload. Nothing reaches the network.
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}
AR=${STG_BUILD_DIR:?}/agent-runner
STG_BG_PIDS=""
KEY=sk-test-$$-do-not-log

# start_llm MODE NAME: a fake model; sets $llm_port and $llm_pid.
start_llm() {
	"$H" fake-llm 0 "$T/$2.port" "$1" >"$T/$2.out" 2>&1 &
	llm_pid=$!
	STG_BG_PIDS="$STG_BG_PIDS $llm_pid"
	wait_for 10 test -s "$T/$2.port" || fail "fake-llm did not start: $(cat "$T/$2.out")"
	llm_port=$(cat "$T/$2.port")
}

# start_tasks NAME [LEASE_MS]: a fake task server; sets $srv_port, $srv_pid.
start_tasks() {
	"$H" fake-tasks 0 "$T/$1.port" "${2:-30000}" >"$T/$1.out" 2>&1 &
	srv_pid=$!
	STG_BG_PIDS="$STG_BG_PIDS $srv_pid"
	wait_for 10 test -s "$T/$1.port" || fail "fake-tasks did not start: $(cat "$T/$1.out")"
	srv_port=$(cat "$T/$1.port")
}

# start_ar NAME CONFIG_LINES...: the agent-runner with its own STIGMER_HOME
# and config.ini; the API key in the environment; sets $ar (pid).
start_ar() {
	local name=$1
	shift
	mkdir -p "$T/$name.home"
	printf '%s\n' "[agent-runner]" "$@" >"$T/$name.home/config.ini"
	STIGMER_HOME=$T/$name.home STIGMER_SERVER_ADDR=127.0.0.1:$srv_port \
		STIGMER_LLM_API_KEY=$KEY "$AR" 2>"$T/$name.err" &
	ar=$!
	STG_BG_PIDS="$STG_BG_PIDS $ar"
}

stop_ar() {
	kill -TERM "$ar" 2>/dev/null
	wait "$ar" && rc=0 || rc=$?
	expect_eq "$rc" 0 "agent-runner exit status on SIGTERM"
}

stop_bg() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# create JSON: POST /v1/tasks; prints the id.
create() {
	curl -s -X POST -H 'Content-Type: application/json' -d "$1" \
		"http://127.0.0.1:$srv_port/v1/tasks" | jq -r .id
}
task() { curl -s "http://127.0.0.1:$srv_port/v1/tasks/$1"; }
field() { task "$1" | jq -r ".$2"; }
finished() { case $(field "$1" state) in succeeded | failed) return 0 ;; esac; return 1; }
# wait_done ID: waits for the task to finish; sets $state $output $error.
wait_done() {
	wait_for 60 finished "$1" || fail "task $1 did not finish: $(task "$1")"
	state=$(field "$1" state)
	output=$(field "$1" output)
	error=$(field "$1" error)
}

case_ "ollama: the reply is the output; the task's model wins; the key is sent, never logged"
start_llm ok llm1
start_tasks srv1
start_ar ar1 "base_url = http://127.0.0.1:$llm_port/"
id=$(create '{"kind":"agent","prompt":"write a haiku","model":"tiny:1b","timeout_ms":20000}')
wait_done "$id"
expect_eq "$state" succeeded "state"
expect_eq "$output" "echo[tiny:1b]: write a haiku" "output"
id=$(create '{"kind":"agent","prompt":"default model"}')
wait_done "$id"
expect_eq "$output" "echo[qwen2.5-coder:7b]: default model" "output with the default model"
expect_in "$(cat "$T/llm1.port.log")" "POST /api/chat model=tiny:1b auth=Bearer $KEY status=200"
expect_in "$(cat "$T/srv1.port.log")" "completed $id succeeded"
stop_ar
expect_in "$(cat "$T/ar1.err")" "api key from STIGMER_LLM_API_KEY"
expect_not_in "$(cat "$T/ar1.err")" "$KEY"

case_ "openai-compatible: choices[0].message.content; OPENAI_API_KEY; model from config"
mkdir -p "$T/ar2.home"
printf '%s\n' "[agent-runner]" "provider = openai" "base_url = http://127.0.0.1:$llm_port" \
	"model = gpt-test" >"$T/ar2.home/config.ini"
STIGMER_HOME=$T/ar2.home STIGMER_SERVER_ADDR=127.0.0.1:$srv_port OPENAI_API_KEY=$KEY-oa \
	"$AR" 2>"$T/ar2.err" &
ar=$!
STG_BG_PIDS="$STG_BG_PIDS $ar"
id=$(create '{"kind":"agent","prompt":"hello openai"}')
wait_done "$id"
expect_eq "$state" succeeded "state"
expect_eq "$output" "echo[gpt-test]: hello openai" "output"
expect_in "$(cat "$T/llm1.port.log")" "POST /v1/chat/completions model=gpt-test auth=Bearer $KEY-oa status=200"
stop_ar
expect_in "$(cat "$T/ar2.err")" "provider openai"
expect_in "$(cat "$T/ar2.err")" "api key from OPENAI_API_KEY"
expect_not_in "$(cat "$T/ar2.err")" "$KEY"
stop_bg "$llm_pid"

case_ "no model server: the task fails with a clear message"
start_llm ok probe
dead=$llm_port
stop_bg "$llm_pid"
start_ar ar3 "base_url = http://127.0.0.1:$dead"
id=$(create '{"kind":"agent","prompt":"anyone there?","timeout_ms":1500}')
wait_done "$id"
expect_eq "$state" failed "state"
expect_in "$error" "ollama at http://127.0.0.1:$dead: connection refused (is Ollama running? set [agent-runner] base_url)"
expect_in "$error" "within the task's timeout of 1s500ms"
expect_in "$(cat "$T/ar3.err")" "retry in"
stop_ar

for mode in 500-then-ok 429-then-ok; do
	case_ "$mode: retried, then the reply"
	start_llm "$mode" "llm-$mode"
	start_ar "ar-$mode" "base_url = http://127.0.0.1:$llm_port"
	id=$(create '{"kind":"agent","prompt":"retry me","timeout_ms":30000}')
	wait_done "$id"
	expect_eq "$state" succeeded "state"
	expect_eq "$output" "echo[qwen2.5-coder:7b]: retry me" "output"
	expect_eq "$(grep -c 'POST /api/chat' "$T/llm-$mode.port.log")" 2 "model requests"
	expect_in "$(cat "$T/ar-$mode.err")" "HTTP ${mode%%-*}"
	stop_ar
	stop_bg "$llm_pid"
done

case_ "always 500: retried within the timeout, then failed"
start_llm always-500 llm5
start_ar ar5 "base_url = http://127.0.0.1:$llm_port"
id=$(create '{"kind":"agent","prompt":"x","timeout_ms":1200}')
wait_done "$id"
expect_eq "$state" failed "state"
expect_in "$error" "HTTP 500: always broken"
stop_ar
stop_bg "$llm_pid"

case_ "401 (bad key): fails at once with the server's text"
start_llm 401 llm6
start_ar ar6 "provider = openai" "base_url = http://127.0.0.1:$llm_port"
id=$(create '{"kind":"agent","prompt":"x","timeout_ms":30000}')
wait_done "$id"
expect_eq "$state" failed "state"
expect_in "$error" "openai at http://127.0.0.1:$llm_port: HTTP 401: Incorrect API key provided."
expect_eq "$(grep -c 'POST' "$T/llm6.port.log")" 1 "no retry of a 4xx"
stop_ar
expect_not_in "$(cat "$T/ar6.err")" "$KEY"
stop_bg "$llm_pid"

case_ "404 (unknown model) and a reply that is not JSON: fail at once"
start_llm 404-model llm7
start_ar ar7 "base_url = http://127.0.0.1:$llm_port"
id=$(create '{"kind":"agent","prompt":"x","model":"nope"}')
wait_done "$id"
expect_eq "$state" failed "state"
expect_in "$error" "HTTP 404: model 'nope' not found, try pulling it first"
stop_ar
stop_bg "$llm_pid"
start_llm bad-json llm8
start_ar ar8 "base_url = http://127.0.0.1:$llm_port"
id=$(create '{"kind":"agent","prompt":"x"}')
wait_done "$id"
expect_in "$error" "unexpected reply (no message.content): this is not json"
stop_ar
stop_bg "$llm_pid"

case_ "slow model: the task's timeout fails it"
start_llm slow:30000 llm9
start_ar ar9 "base_url = http://127.0.0.1:$llm_port"
id=$(create '{"kind":"agent","prompt":"x","timeout_ms":700}')
wait_done "$id"
expect_eq "$state" failed "state"
expect_in "$error" "no reply within the task's timeout of 700ms"
stop_ar
stop_bg "$llm_pid"

case_ "a long call heartbeats the lease (every lease/3)"
stop_bg "$srv_pid"
start_tasks srv2 600
start_llm slow:1500 llm10
start_ar ar10 "base_url = http://127.0.0.1:$llm_port"
id=$(create '{"kind":"agent","prompt":"take your time","timeout_ms":20000}')
wait_done "$id"
expect_eq "$state" succeeded "state"
n=$(grep -c "^heartbeat $id" "$T/srv2.port.log")
[ "$n" -ge 2 ] && pass || fail "expected at least 2 heartbeats, got $n"

case_ "a lost lease (409) abandons the task; cancelled too"
id=$(create '{"kind":"agent","prompt":"LOSE-LEASE","timeout_ms":20000}')
wait_for 20 grep -q "task $id: heartbeat: 409, the lease is no longer ours; abandoning it" \
	"$T/ar10.err" && pass || fail "no abandon: $(cat "$T/ar10.err")"
expect_eq "$(field "$id" state)" leased "state (not completed by us)"
expect_not_in "$(cat "$T/srv2.port.log")" "complete $id"
id=$(create '{"kind":"agent","prompt":"CANCEL-ME","timeout_ms":20000}')
wait_for 20 grep -q "task $id: cancelled by the server; abandoning it" "$T/ar10.err" && pass ||
	fail "no cancel: $(cat "$T/ar10.err")"
# It goes on with the next task.
id=$(create '{"kind":"agent","prompt":"after that"}')
wait_done "$id"
expect_eq "$output" "echo[qwen2.5-coder:7b]: after that" "output after an abandoned task"

case_ "SIGTERM during a call: the task is released, exit 0"
id=$(create '{"kind":"agent","prompt":"interrupted","timeout_ms":20000}')
wait_for 20 grep -q "task $id: claimed" "$T/ar10.err" || fail "not claimed"
stop_ar
expect_in "$(cat "$T/srv2.port.log")" "release $id"
expect_eq "$(field "$id" state)" pending "state after the release"
expect_in "$(cat "$T/ar10.err")" "task $id: released"
stop_bg "$llm_pid"

case_ "daemon: the embedded agent-runner answers a task (provider from config.ini)"
start_llm ok llm11
cat >"$STIGMER_HOME/config.ini" <<EOC
[server]
listen = 127.0.0.1:$srv_port
[component.server]
enabled = no
[component.workflow-runner]
enabled = no
[agent-runner]
provider = openai
base_url = http://127.0.0.1:$llm_port
model = daemon-model
EOC
STIGMER_LLM_API_KEY=$KEY-daemon run "$STIGMER_BIN" daemon start
expect_rc 0
id=$(create '{"kind":"agent","prompt":"from the daemon"}')
wait_done "$id"
expect_eq "$state" succeeded "state"
expect_eq "$output" "echo[daemon-model]: from the daemon" "output"
expect_in "$(cat "$T/llm11.port.log")" "POST /v1/chat/completions model=daemon-model auth=Bearer $KEY-daemon"
run "$STIGMER_BIN" daemon stop
expect_rc 0
logs=$(cat "$STIGMER_HOME"/logs/*.log 2>/dev/null)
expect_in "$logs" "task $id: succeeded"
expect_not_in "$logs" "$KEY"

stop_bg "$llm_pid"
stop_bg "$srv_pid"
finish
