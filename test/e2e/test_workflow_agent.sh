# The whole stack does the work: `stigmer run` of a workflow whose `run`
# step feeds an `agent` step, answered by the real agent-runner through a
# fake model server on loopback, with both providers; and with no model
# server, the step fails with a clear message.
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}
port=$(free_port)

"$H" fake-llm 0 "$T/llm.port" ok >"$T/llm.out" 2>&1 &
STG_BG_PIDS="$!"
wait_for 10 test -s "$T/llm.port" || fail "fake-llm did not start: $(cat "$T/llm.out")"
llm=$(cat "$T/llm.port")

config() { # PROVIDER BASE_URL
	cat >"$STIGMER_HOME/config.ini" <<EOC
[server]
listen = 127.0.0.1:$port
[agent-runner]
provider = $1
base_url = $2
EOC
}

cat >"$T/wf.ini" <<'EOW'
[workflow]
name = greet-and-ask
input.who = world
[step greet]
run = echo "hello $STIGMER_INPUT_WHO"
[step ask]
agent = Summarize: {{steps.greet.output}}
model = test-model
timeout = 20s
[step show]
run = echo "model said: $STIGMER_STEP_ASK_OUTPUT"
EOW

for provider in ollama openai; do
	case_ "an agent step through $provider"
	config "$provider" "http://127.0.0.1:$llm"
	if [ "$provider" = ollama ]; then
		run "$STIGMER_BIN" daemon start
	else
		run "$STIGMER_BIN" daemon restart agent-runner
	fi
	expect_rc 0
	run timeout 60 "$STIGMER_BIN" run "$T/wf.ini" --input who=stigmer
	expect_rc 0
	expect_in "$out" "model said: echo[test-model]: Summarize: hello stigmer"
done
grep -q "/api/chat" "$T/llm.port.log" && pass || fail "ollama's /api/chat was not called"
grep -q "/v1/chat/completions" "$T/llm.port.log" && pass || fail "/v1/chat/completions was not called"

case_ "no model server: the step fails with a clear message"
config ollama "http://127.0.0.1:$(free_port)"
run "$STIGMER_BIN" daemon restart agent-runner
sed -i 's/timeout = 20s/timeout = 2s/' "$T/wf.ini"
run timeout 60 "$STIGMER_BIN" run "$T/wf.ini"
expect_rc 1
expect_in "$out$err" "connection refused"
id=$("$STIGMER_BIN" executions list --json 2>/dev/null | jq -r '.[0].id')
expect_eq "$("$STIGMER_BIN" executions show "$id" --json | jq -r '.steps[2].state')" skipped "the step after the failed agent step"

run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_no_stack
finish
