# Chaos: random kills of random components of the real stack for a bounded
# time (STG_CHAOS_SECONDS, default 60); then every component is ready, each
# runs exactly once, no zombie, and stop leaves nothing.
. "$(dirname "$0")/lib.sh"
secs=${STG_CHAOS_SECONDS:-60}
port=$(free_port)
cat >"$STIGMER_HOME/config.ini" <<EOC
[server]
listen = 127.0.0.1:$port
[restart]
backoff_initial = 10ms
backoff_max = 200ms
max_restarts = 100000
[supervisor]
stop_timeout = 2s
EOC

run "$STIGMER_BIN" daemon start
expect_rc 0
sup=$(sup_pid)

case_ "random kills for ${secs}s"
comps=(server workflow-runner agent-runner)
sigs=(KILL KILL TERM SEGV)
kills=0
end=$(($(date +%s) + secs))
while [ "$(date +%s)" -lt "$end" ]; do
	c=${comps[RANDOM % 3]}
	s=${sigs[RANDOM % 4]}
	p=$(comp "$c" pid)
	if [ -n "$p" ] && [ "$p" != null ]; then
		kill -"$s" "$p" 2>/dev/null && kills=$((kills + 1))
	fi
	sleep "0.$((RANDOM % 4 + 1))"
	alive "$sup" || break
done
echo "sent $kills signals"
alive "$sup" && pass || fail "the supervisor died"
[ "$kills" -gt 10 ] && pass || fail "only $kills kills"

case_ "every component ready again"
wait_for 30 sh -c "$STIGMER_BIN daemon status >/dev/null" && pass || fail "not all ready: $("$STIGMER_BIN" daemon status)"
total=0
for c in "${comps[@]}"; do
	expect_eq "$(comp_procs "$c" | wc -l)" 1 "live processes of $c"
	total=$((total + $(comp "$c" restarts)))
done
[ "$total" -gt 0 ] && pass || fail "no restart counted"
expect_eq "$(zombies_of "$sup")" "" zombies
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null && pass || fail "server not answering"

case_ "stop leaves nothing"
run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_no_stack

finish
