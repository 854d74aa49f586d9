# The agent-runner in the real stack: `stigmer daemon start` runs the server
# (internal-server) and the embedded reference agent-runner; an agent task
# created with POST /v1/tasks (docs/api.md) is answered by the helper's
# fake-llm on a free loopback port, through either provider. The workflow
# runner is off: the agent task is created by hand, as a workflow runner
# would. Nothing reaches the network.
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}
STG_BG_PIDS=""
KEY=sk-stack-$$-secret
PORT=$(free_port)
B=http://127.0.0.1:$PORT

start_llm() { # MODE NAME: sets $llm_port, $llm_pid
	"$H" fake-llm 0 "$T/$2.port" "$1" >"$T/$2.out" 2>&1 &
	llm_pid=$!
	STG_BG_PIDS="$STG_BG_PIDS $llm_pid"
	wait_for 10 test -s "$T/$2.port" || fail "fake-llm did not start: $(cat "$T/$2.out")"
	llm_port=$(cat "$T/$2.port")
}

config() { # PROVIDER BASE_URL
	cat >"$STIGMER_HOME/config.ini" <<EOC
[server]
listen = 127.0.0.1:$PORT
[component.workflow-runner]
enabled = no
[agent-runner]
provider = $1
base_url = $2
model = cfg-model
EOC
}

WF='[workflow]
name = ask
[step summarize]
agent = Summarize this
model = test-model
'

# agent_task PROMPT TIMEOUT_MS [MODEL]: creates an execution and an agent
# task for its step; prints the task id.
agent_task() {
	local ex
	ex=$(jq -cn --arg wf "$WF" '{workflow: $wf, inputs: {}}' |
		curl -s -X POST -H 'Content-Type: application/json' -d @- "$B/v1/executions" | jq -r .id)
	jq -cn --arg ex "$ex" --arg p "$1" --argjson t "$2" --arg m "${3:-}" \
		'{kind:"agent", execution_id:$ex, step:"summarize", prompt:$p, timeout_ms:$t} + (if $m == "" then {} else {model:$m} end)' |
		curl -s -X POST -H 'Content-Type: application/json' -d @- "$B/v1/tasks" | jq -r .id
}

# wait_task ID: GET /v1/tasks/ID?wait=30s until it is finished; sets
# $state $output $error.
wait_task() {
	local i
	for i in 1 2 3 4; do
		curl -s --max-time 40 "$B/v1/tasks/$1?wait=30s" >"$T/task.json"
		state=$(jq -r .state "$T/task.json")
		case $state in succeeded | failed | cancelled) break ;; esac
	done
	output=$(jq -r .output "$T/task.json")
	error=$(jq -r .error "$T/task.json")
}

case_ "ollama through the daemon: the reply is the task's output"
start_llm ok llm1
config ollama "http://127.0.0.1:$llm_port"
STIGMER_LLM_API_KEY=$KEY run "$STIGMER_BIN" daemon start
expect_rc 0
wait_for 30 sh -c "[ \"\$('$STIGMER_BIN' daemon status --json | jq -r '.components[] | select(.name==\"agent-runner\") | .state')\" = ready ]" ||
	fail "agent-runner not ready: $("$STIGMER_BIN" daemon status 2>&1)"
id=$(agent_task "Summarize hello bob" 20000 tiny-model)
case $id in tk_*) pass ;; *) fail "no task id: $id" ;; esac
wait_task "$id"
expect_eq "$state" succeeded "state"
expect_eq "$output" "echo[tiny-model]: Summarize hello bob" "output"
expect_in "$(cat "$T/llm1.port.log")" "POST /api/chat model=tiny-model auth=Bearer $KEY status=200"
id=$(agent_task "no model named" 20000)
wait_task "$id"
expect_eq "$output" "echo[cfg-model]: no model named" "the configured model"

case_ "openai-compatible after a restart of the agent-runner with a new config"
config openai "http://127.0.0.1:$llm_port/"
run "$STIGMER_BIN" daemon restart agent-runner
expect_rc 0
wait_for 30 grep -q "provider openai" "$STIGMER_HOME/logs/agent-runner.log" ||
	fail "the agent-runner did not pick up provider openai"
id=$(agent_task "hello openai" 20000 gpt-x)
wait_task "$id"
expect_eq "$state" succeeded "state"
expect_eq "$output" "echo[gpt-x]: hello openai" "output"
expect_in "$(cat "$T/llm1.port.log")" "POST /v1/chat/completions model=gpt-x auth=Bearer $KEY status=200"

case_ "no model server: the task fails with a clear message"
kill -TERM "$llm_pid"
wait "$llm_pid" 2>/dev/null
config ollama "http://127.0.0.1:$llm_port"
run "$STIGMER_BIN" daemon restart agent-runner
expect_rc 0
wait_for 30 sh -c "grep -c 'provider ollama' '$STIGMER_HOME/logs/agent-runner.log' | grep -qx 2" ||
	fail "the agent-runner did not pick up provider ollama again"
id=$(agent_task "anyone?" 1500)
wait_task "$id"
expect_eq "$state" failed "state"
expect_in "$error" "ollama at http://127.0.0.1:$llm_port: connection refused (is Ollama running? set [agent-runner] base_url)"

case_ "the key is never logged; stop is clean"
run "$STIGMER_BIN" daemon stop
expect_rc 0
logs=$(cat "$STIGMER_HOME"/logs/*.log)
expect_in "$logs" "api key from STIGMER_LLM_API_KEY"
expect_not_in "$logs" "$KEY"
expect_eq "$(stack_procs)" "" "processes left"

finish
