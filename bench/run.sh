#!/bin/bash
# bench/run.sh: stigmer against runit, s6, daemontools and supervisor on one
# machine, in one run. `make bench` calls it with everything built; see
# docs/benchmarks.md for what each item measures and how to reproduce.
#
#   bench/run.sh [--smoke] [--out DIR] [--only ITEMS]
#
# --smoke: seconds, stigmer only, no peers, small sizes; checks the suite
# works, the numbers mean nothing. --only: a comma list of item numbers.
# Environment (set by the Makefile):
#   STIGMER_BIN      the stigmer to measure (a Release build without payload)
#   STIGMER_X64_BIN  a stigmer embedding a 64 MiB payload (item 6), optional
#   STG_TEST_HELPER  build/stg-test-helper (the child program of every tool)
#   STG_BENCH        build/stg-bench
#   STG_TLS_SERVER   build/stg-test-tls-server (item 7)
#   STG_AGENT_RUNNER build/agent-runner (the full stack of items 5 and 9)
#   STG_SOURCE_DIR   the source tree
set -u
shopt -s nullglob

SMOKE=no
OUT=
ONLY=1,2,3,4,5,6,7,8,9
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) SMOKE=yes ;;
	--out) OUT=$2; shift ;;
	--only) ONLY=$2; shift ;;
	*) echo "usage: $0 [--smoke] [--out DIR] [--only 1,2,...]" >&2; exit 2 ;;
	esac
	shift
done
: "${STIGMER_BIN:?}" "${STG_TEST_HELPER:?}" "${STG_BENCH:?}" "${STG_SOURCE_DIR:?}"
: "${STIGMER_X64_BIN:=}" "${STG_TLS_SERVER:=}" "${STG_AGENT_RUNNER:=}"
for v in STIGMER_BIN STIGMER_X64_BIN STG_TEST_HELPER STG_BENCH STG_TLS_SERVER STG_AGENT_RUNNER; do
	[ -n "${!v}" ] && printf -v "$v" %s "$(realpath "${!v}")"
done

if [ "$SMOKE" = yes ]; then
	IDLE_S=1 IDLE_RUNS=1 KILLS=3 GAP_MS=300 MIN_UPTIME=200ms LOG_LINES=20000 LOG_RUNS=1
	COLD_RUNS=2 X_RUNS=1 FETCH_MIB=4 FETCH_RUNS=1 WRK_S=1 WRK_RUNS=1 EXEC_N=10
	TOOLS="stigmer"
else
	IDLE_S=30 IDLE_RUNS=3 KILLS=50 GAP_MS=1200 MIN_UPTIME=1s LOG_LINES=2000000 LOG_RUNS=3
	COLD_RUNS=11 X_RUNS=5 FETCH_MIB=100 FETCH_RUNS=5 WRK_S=10 WRK_RUNS=3 EXEC_N=200
	TOOLS="stigmer runit s6 daemontools supervisor"
fi
LOG_LEN=100
# BENCH_SET="KILLS=10 LOG_RUNS=1": override the sizes above (development).
[ -n "${BENCH_SET:-}" ] && eval "$BENCH_SET"

W=$(mktemp -d /tmp/stg-bench.XXXXXX)
OUT=${OUT:-$W/out}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
RES=$OUT/results.jsonl
: >"$RES"
BG_PIDS=""

say() { echo "bench: $*" >&2; }
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

cleanup() {
	for h in "$W"/*/home; do
		[ -f "$h/run/supervisor.pid" ] && STIGMER_HOME=$h timeout 20 "$STIGMER_BIN" daemon stop >/dev/null 2>&1
		[ -f "$h/run/supervisor.pid" ] && kill -9 "$(cat "$h/run/supervisor.pid")" 2>/dev/null
	done
	for p in $BG_PIDS; do kill -TERM "$p" 2>/dev/null; done
	sleep 0.2
	for p in $BG_PIDS; do
		pkill -KILL -P "$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stats V...: "n median min max p25 p75" of the numbers.
stats() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
	function q(p,  i) { i = 1 + (NR - 1) * p; return v[int(i)] + (v[int(i) + (i > int(i))] - v[int(i)]) * (i - int(i)) }
	END { if (NR == 0) { print "0 null null null null null"; exit }
	      printf "%d %.6g %.6g %.6g %.6g %.6g\n", NR, q(0.5), v[1], v[NR], q(0.25), q(0.75) }'
}

# rec ITEM TOOL METRIC UNIT BUDGET V...: one result (the median of the
# samples, their spread) into results.jsonl. BUDGET: "" or "<=N" or ">=N".
rec() {
	local item=$1 tool=$2 metric=$3 unit=$4 budget=$5
	shift 5
	local s
	read -r n med min max p25 p75 <<<"$(stats "$@")"
	local pass=null
	if [ -n "$budget" ] && [ "$med" != null ]; then
		pass=$(awk -v m="$med" -v b="${budget:2}" -v op="${budget:0:2}" \
			'BEGIN { print (op == "<=" ? m <= b : m >= b) ? "true" : "false" }')
	fi
	s=$(printf '%s\n' "$@" | jq -R 'tonumber? // empty' | jq -sc .)
	jq -nc --arg item "$item" --arg tool "$tool" --arg metric "$metric" --arg unit "$unit" \
		--arg budget "$budget" --argjson n "$n" --argjson median "$med" --argjson min "$min" \
		--argjson max "$max" --argjson p25 "$p25" --argjson p75 "$p75" --argjson pass "$pass" \
		--argjson samples "$s" \
		'{item: ($item|tonumber), tool: $tool, metric: $metric, unit: $unit, n: $n,
		  median: $median, min: $min, max: $max, p25: $p25, p75: $p75,
		  budget: (if $budget == "" then null else $budget end), pass: $pass,
		  samples: $samples}' >>"$RES"
	say "$item $tool $metric: median $med $unit (min $min, max $max, n $n) ${budget:+budget $budget: }$( [ "$pass" = null ] || echo "$pass")"
}

# note ITEM TOOL METRIC TEXT: a result that was not measured, and why.
note() {
	jq -nc --arg item "$1" --arg tool "$2" --arg metric "$3" --arg note "$4" \
		'{item: ($item|tonumber), tool: $tool, metric: $metric, n: 0, median: null, note: $note}' >>"$RES"
	say "$1 $2 $3: not measured: $4"
}

field() { # KEY "k v k v ...": the value after KEY
	awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$2"
}

http_get() { # PORT PATH: the response, without curl
	exec 5<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&5
	timeout 5 cat <&5
	exec 5<&-
}

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		(exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
	done
}

wait_for() { # SECONDS CMD...
	local end=$(($(date +%s%N) + $1 * 1000000000))
	shift
	while [ "$(date +%s%N)" -lt "$end" ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.02
	done
	return 1
}

# --- the supervised child stacks (items 1-3) ------------------------------------

# Every tool runs the same child: stg-test-helper in mode notify-ready (it
# sends READY=1 where NOTIFY_SOCKET is set, then waits for SIGTERM), exec'd
# directly: the run file of runit, s6 and daemontools is a symlink to it,
# and its mode comes from the environment (STG_HELPER_MODE).
declare -A SUP_PID

stigmer_home() { # NAME: a fresh STIGMER_HOME under $W
	local h=$W/$1/home
	mkdir -p "$h"
	echo "$h"
}

start_stigmer_helper() {
	local h
	h=$(stigmer_home stigmer)
	cat >"$h/config.ini" <<EOC
[server]
listen = 127.0.0.1:$(free_port)
[component.server]
enabled = no
[component.workflow-runner]
enabled = no
[agent-runner]
path = $STG_TEST_HELPER
[component.agent-runner]
env.STG_HELPER_MODE = notify-ready
min_uptime = $MIN_UPTIME
max_restarts = 100000
EOC
	STIGMER_HOME=$h "$STIGMER_BIN" daemon start >/dev/null || return 1
	SUP_PID[stigmer]=$(cat "$h/run/supervisor.pid")
}

start_dirsup() { # TOOL PROGRAM: runit/s6/daemontools, one service directory
	local d=$W/$1/svc
	mkdir -p "$d"
	ln -sf "$STG_TEST_HELPER" "$d/run"
	(cd "$W/$1" && exec env STG_HELPER_MODE=notify-ready setsid "$2" "$d" </dev/null >"$W/$1/out" 2>&1) &
	SUP_PID[$1]=$!
	BG_PIDS="$BG_PIDS $!"
}

start_supervisord() {
	local d=$W/supervisor
	mkdir -p "$d/logs"
	cat >"$d/supervisord.conf" <<EOC
[supervisord]
nodaemon = true
logfile = $d/supervisord.log
pidfile = $d/supervisord.pid
childlogdir = $d/logs
[program:bench]
command = $STG_TEST_HELPER
environment = STG_HELPER_MODE="notify-ready"
autorestart = true
startsecs = 0
startretries = 100000
stopsignal = TERM
EOC
	(exec setsid supervisord -c "$d/supervisord.conf" </dev/null >"$d/out" 2>&1) &
	SUP_PID[supervisor]=$!
	BG_PIDS="$BG_PIDS $!"
}

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null; }
has_child() { [ -n "$(children_of "$1")" ]; }

start_stacks() {
	for t in $TOOLS; do
		case $t in
		stigmer) start_stigmer_helper || { say "stigmer daemon start failed"; return 1; } ;;
		runit) start_dirsup runit runsv ;;
		s6) start_dirsup s6 s6-supervise ;;
		daemontools) start_dirsup daemontools supervise ;;
		supervisor) start_supervisord ;;
		esac
	done
	for t in $TOOLS; do
		wait_for 10 has_child "${SUP_PID[$t]}" || { say "$t: no child started"; return 1; }
	done
	[ "$SMOKE" = yes ] || sleep 2 # past every tool's start-up work
}

ctx_switches() { # PID: voluntary context switches, all threads
	cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'
}

item_idle_mem() {
	local t r
	declare -A before
	declare -A samples
	for r in $(seq "$IDLE_RUNS"); do
		for t in $TOOLS; do before[$t]=$(ctx_switches "${SUP_PID[$t]}"); done
		sleep "$IDLE_S"
		for t in $TOOLS; do
			samples[$t]="${samples[$t]:-} $(($(ctx_switches "${SUP_PID[$t]}") - ${before[$t]}))"
		done
	done
	for t in $TOOLS; do
		# shellcheck disable=SC2086
		rec 1 "$t" "voluntary context switches in ${IDLE_S}s" count "$([ "$t" = stigmer ] && echo "<=0")" ${samples[$t]}
	done
	if want 2; then
		for t in $TOOLS; do
			local p=${SUP_PID[$t]} rss=() pss=()
			for r in 1 2 3; do
				rss+=("$(awk '/^VmRSS/ { print $2 }' /proc/"$p"/status)")
				pss+=("$(awk '/^Pss:/ { print $2 }' /proc/"$p"/smaps_rollup)")
				sleep 0.2
			done
			rec 2 "$t" "RSS" KiB "$([ "$t" = stigmer ] && echo "<=4096")" "${rss[@]}"
			rec 2 "$t" "PSS" KiB "" "${pss[@]}"
		done
	fi
}

item_restart() {
	local t out
	for t in $TOOLS; do
		say "3: $t: $KILLS kills, ${GAP_MS}ms apart"
		if [ "$t" = stigmer ]; then
			out=$("$STG_BENCH" restart "${SUP_PID[$t]}" "$STG_TEST_HELPER" "$KILLS" "$GAP_MS" \
				"$W/stigmer/home/run/supervisor.sock" agent-runner) || { note 3 "$t" restart "stg-bench restart failed"; continue; }
		else
			out=$("$STG_BENCH" restart "${SUP_PID[$t]}" "$STG_TEST_HELPER" "$KILLS" "$GAP_MS") ||
				{ note 3 "$t" restart "stg-bench restart failed"; continue; }
		fi
		echo "$out" >"$OUT/restart-$t.txt"
		# shellcheck disable=SC2046
		rec 3 "$t" "kill -9 to replacement running" ms "$([ "$t" = stigmer ] && echo "<=5")" \
			$(awk '{ printf "%.3f\n", $4 / 1e6 }' <<<"$out")
		if [ "$t" = stigmer ]; then
			# shellcheck disable=SC2046
			rec 3 "$t" "kill -9 to replacement ready" ms "" $(awk '{ printf "%.3f\n", $6 / 1e6 }' <<<"$out")
		fi
	done
}

stop_stacks() {
	[ -f "$W/stigmer/home/run/supervisor.pid" ] && STIGMER_HOME=$W/stigmer/home "$STIGMER_BIN" daemon stop >/dev/null 2>&1
	for t in runit s6 daemontools supervisor; do
		local p=${SUP_PID[$t]:-}
		[ -n "$p" ] || continue
		local kids
		kids=$(children_of "$p")
		kill -TERM "$p" 2>/dev/null
		# shellcheck disable=SC2086
		[ -n "$kids" ] && kill -TERM $kids 2>/dev/null
		wait "$p" 2>/dev/null
	done
	return 0
}

# --- item 4: log throughput -------------------------------------------------------

MIB_WRITTEN=$(awk -v n="$LOG_LINES" -v l="$LOG_LEN" 'BEGIN { printf "%.3f", n * l / 1048576 }')

log_count() { # TOOL RUN FILES...: count and check the lines
	local t=$1 r=$2
	shift 2
	local c
	c=$("$STG_BENCH" count "$LOG_LINES" "$@")
	echo "$t run $r: $c" >>"$OUT/log-counts.txt"
	[ "$(field missing "$c")" = 0 ] && [ "$(field duplicate "$c")" = 0 ]
}

log_stigmer() { # RUN: prints MiB/s
	local h gate t0 t1 rc=0
	rm -rf "$W/log-stigmer"
	h=$(stigmer_home log-stigmer)
	gate=$W/log-stigmer/gate
	mkfifo "$gate"
	cat >"$h/config.ini" <<EOC
[server]
listen = 127.0.0.1:$(free_port)
[component.server]
enabled = no
[component.workflow-runner]
enabled = no
[agent-runner]
path = $STG_BENCH
[component.agent-runner]
env.STG_BENCH_ARGS = write $LOG_LINES $LOG_LEN $gate hold
notify = no
settle = 50ms
[logs]
max_size = 16MiB
keep = 40
EOC
	STIGMER_HOME=$h "$STIGMER_BIN" daemon start >/dev/null || return 1
	t0=$(field t0_ns "$("$STG_BENCH" gate "$gate")")
	"$STG_BENCH" logwait "$h/logs/agent-runner.log" 600 >/dev/null || rc=1
	t1=$("$STG_BENCH" now)
	STIGMER_HOME=$h "$STIGMER_BIN" daemon stop >/dev/null
	[ $rc = 0 ] || return 1
	log_count stigmer "$1" "$h"/logs/agent-runner.log* || { say "4: stigmer lost lines (see log-counts.txt)"; echo LOST; }
	awk -v m="$MIB_WRITTEN" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", m / ((b - a) / 1e9) }'
	rm -rf "$W/log-stigmer"
}

log_pipe() { # TOOL RUN: the writer piped into the tool's logger
	local t=$1 d=$W/log-$1 gate t0 t1 p
	rm -rf "$d"
	mkdir -p "$d/logs"
	gate=$d/gate
	mkfifo "$gate"
	case $t in
	s6-log) ("$STG_BENCH" write "$LOG_LINES" "$LOG_LEN" "$gate" exit | s6-log t s16777215 n40 "$d/logs") & ;;
	multilog) ("$STG_BENCH" write "$LOG_LINES" "$LOG_LEN" "$gate" exit | multilog t s16777215 n40 "$d/logs") & ;;
	svlogd)
		printf 's16777215\nn40\n' >"$d/logs/config"
		("$STG_BENCH" write "$LOG_LINES" "$LOG_LEN" "$gate" exit | svlogd -tt "$d/logs") &
		;;
	esac
	p=$!
	t0=$(field t0_ns "$("$STG_BENCH" gate "$gate")")
	wait "$p"
	t1=$("$STG_BENCH" now)
	log_count "$t" "$2" "$d"/logs/* || { say "4: $t lost lines (see log-counts.txt)"; echo LOST; }
	awk -v m="$MIB_WRITTEN" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", m / ((b - a) / 1e9) }'
	rm -rf "$d"
}

item_log() {
	local t r v loggers="stigmer"
	[ "$SMOKE" = yes ] || loggers="stigmer s6-log multilog svlogd"
	declare -A s
	for r in $(seq "$LOG_RUNS"); do
		for t in $loggers; do
			say "4: $t run $r: $MIB_WRITTEN MiB in $LOG_LEN-byte lines"
			if [ "$t" = stigmer ]; then v=$(log_stigmer "$r"); else v=$(log_pipe "$t" "$r"); fi
			case $v in *LOST*) s[$t-lost]=yes ;; esac
			s[$t]="${s[$t]:-} $(tail -n 1 <<<"$v")"
		done
	done
	for t in $loggers; do
		# shellcheck disable=SC2086
		rec 4 "$t" "log throughput" MiB/s "" ${s[$t]}
		[ "${s[$t-lost]:-}" = yes ] && note 4 "$t" "lines" "LINES LOST in at least one run: see log-counts.txt"
	done
	if [ -n "${s[s6-log]:-}" ]; then
		local a b ratio=()
		for r in $(seq "$LOG_RUNS"); do
			a=$(awk -v r="$r" '{ print $r }' <<<"${s[stigmer]}")
			b=$(awk -v r="$r" '{ print $r }' <<<"${s[s6-log]}")
			ratio+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')")
		done
		rec 4 stigmer "throughput / s6-log's" x ">=2" "${ratio[@]}"
	fi
}

# --- the full stack (items 5, 9) -------------------------------------------------

full_home() {
	local h
	h=$(stigmer_home full)
	cat >"$h/config.ini" <<EOC
[server]
listen = 127.0.0.1:$PORT
EOC
	STIGMER_HOME=$h "$STIGMER_BIN" agent-runner install "$STG_AGENT_RUNNER" --version bench >/dev/null || return 1
	echo "$h"
}

item_cold() {
	local h r o v=()
	[ -n "$STG_AGENT_RUNNER" ] || { note 5 stigmer "cold start" "no STG_AGENT_RUNNER"; return; }
	PORT=$(free_port)
	h=$(full_home) || { note 5 stigmer "cold start" "agent-runner install failed"; return; }
	for r in $(seq "$COLD_RUNS"); do
		o=$(STIGMER_HOME=$h "$STG_BENCH" time "$STIGMER_BIN" daemon start)
		[ "$(field rc "$o")" = 0 ] || { note 5 stigmer "cold start" "daemon start failed: $o"; return; }
		v+=("$(awk -v w="$(field wall_ns "$o")" 'BEGIN { printf "%.3f", w / 1e6 }')")
		STIGMER_HOME=$h "$STIGMER_BIN" daemon status --json >"$OUT/cold-status.json" 2>&1
		STIGMER_HOME=$h "$STIGMER_BIN" daemon stop >/dev/null
	done
	rec 5 stigmer "daemon start until every component is ready" ms "<=50" "${v[@]}"
}

item_server() {
	local h o rps=() i
	[ -n "$STG_AGENT_RUNNER" ] || { note 9 stigmer "/healthz" "no STG_AGENT_RUNNER"; return; }
	PORT=$(free_port)
	h=$(full_home) || return
	STIGMER_HOME=$h "$STIGMER_BIN" daemon start >/dev/null || { note 9 stigmer "/healthz" "daemon start failed"; return; }
	if command -v wrk >/dev/null && [ "$SMOKE" = no ]; then
		for i in $(seq "$WRK_RUNS"); do
			o=$(wrk -t1 -c32 -d"${WRK_S}s" "http://127.0.0.1:$PORT/healthz")
			echo "$o" >>"$OUT/wrk-healthz.txt"
			rps+=("$(awk '/^Requests\/sec/ { print $2 }' <<<"$o")")
		done
		rec 9 stigmer "GET /healthz (wrk -t1 -c32)" req/s "" "${rps[@]}"
	else
		if http_get "$PORT" /healthz | grep -q '^HTTP/1.1 200'; then
			rec 9 stigmer "GET /healthz answered" count "" 1
		else
			note 9 stigmer "/healthz" "no answer"
		fi
	fi
	item_executions "$h"
	STIGMER_HOME=$h "$STIGMER_BIN" daemon stop >/dev/null
}

# Executions per second (docs/api.md): submit EXEC_N executions of a
# one-step workflow, 4 at a time, then wait until all have finished.
item_executions() {
	local h=$1 base="http://127.0.0.1:$PORT" wf body code t0 t1 done_n
	command -v curl >/dev/null || { note 9 stigmer "executions/s" "no curl command"; return; }
	wf=$STG_SOURCE_DIR/bench/workflow-one-step.ini
	body=$(jq -nc --rawfile w "$wf" '{workflow: $w, inputs: {}}')
	code=$(curl -s -o "$W/exec-probe" -w '%{http_code}' -H 'Content-Type: application/json' \
		--data-binary "$body" "$base/v1/executions")
	if [ "$code" != 201 ]; then
		note 9 stigmer "executions/s" "POST /v1/executions answered $code ($(head -c 200 "$W/exec-probe")): the executions endpoint is not in this build"
		return
	fi
	printf '%s' "$body" >"$W/exec-body.json"
	t0=$("$STG_BENCH" now)
	seq "$EXEC_N" | xargs -P4 -I{} curl -s -o /dev/null -H 'Content-Type: application/json' \
		--data-binary @"$W/exec-body.json" "$base/v1/executions"
	local end=$(($(date +%s) + 120))
	while [ "$(date +%s)" -lt "$end" ]; do
		done_n=$(curl -s "$base/v1/executions?limit=1000" |
			jq '[.executions[] | select(.state == "succeeded" or .state == "failed")] | length')
		[ "${done_n:-0}" -ge $((EXEC_N + 1)) ] && break
		sleep 0.01
	done
	t1=$("$STG_BENCH" now)
	if [ "${done_n:-0}" -lt $((EXEC_N + 1)) ]; then
		note 9 stigmer "executions/s" "only ${done_n:-0} of $((EXEC_N + 1)) executions finished within 120s"
		return
	fi
	rec 9 stigmer "one-step workflow executions" exec/s "" \
		"$(awk -v n="$EXEC_N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / ((b - a) / 1e9) }')"
}

# --- item 6: extraction --------------------------------------------------------------

item_extract() {
	local bin=$STIGMER_X64_BIN h payload o r s=() d=() ratio=()
	# A smoke run extracts whatever payload the test build embeds.
	[ -z "$bin" ] && [ "$SMOKE" = yes ] && bin=$STIGMER_BIN
	[ -n "$bin" ] || { note 6 stigmer extraction "no STIGMER_X64_BIN (a build with a 64 MiB payload)"; return; }
	payload=$(realpath "$(dirname "$bin")/generated/agent-runner/payload.bin" 2>/dev/null)
	[ -f "$payload" ] || payload=${STIGMER_X64_PAYLOAD:-}
	[ -f "$payload" ] || { note 6 stigmer extraction "payload file not found"; return; }
	h=$(stigmer_home extract)
	cat "$payload" "$bin" >/dev/null # both in the page cache
	for r in $(seq "$X_RUNS"); do
		rm -rf "$h/bin" "$W/extract/copy"
		sync
		o=$(STIGMER_HOME=$h "$STG_BENCH" time "$bin" agent-runner extract)
		[ "$(field rc "$o")" = 0 ] || { note 6 stigmer extraction "extract failed: $o"; return; }
		s+=("$(awk -v w="$(field wall_ns "$o")" 'BEGIN { printf "%.3f", w / 1e6 }')")
		cmp -s "$payload" "$h/bin/agent-runner" || { note 6 stigmer extraction "extracted file differs from the payload"; return; }
		sync
		o=$("$STG_BENCH" time dd if="$payload" of="$W/extract/copy" bs=1M conv=fsync status=none)
		d+=("$(awk -v w="$(field wall_ns "$o")" 'BEGIN { printf "%.3f", w / 1e6 }')")
		ratio+=("$(awk -v a="${s[-1]}" -v b="${d[-1]}" 'BEGIN { printf "%.3f", a / b }')")
	done
	local mib
	mib=$(awk -v b="$(stat -c %s "$payload")" 'BEGIN { printf "%.1f", b / 1048576 }')
	rec 6 stigmer "agent-runner extract, $mib MiB" ms "" "${s[@]}"
	rec 6 dd "dd bs=1M conv=fsync, $mib MiB" ms "" "${d[@]}"
	rec 6 stigmer "extract / dd" x "<=1.2" "${ratio[@]}"
}

# --- item 7: fetch and verify -----------------------------------------------------------

item_fetch() {
	local d=$W/fetch port sum o r sw=() sc=() cw=() cc=() ratio=() url
	[ -n "$STG_TLS_SERVER" ] || { note 7 stigmer fetch "no STG_TLS_SERVER"; return; }
	mkdir -p "$d/www" "$d/dl"
	head -c $((FETCH_MIB * 1048576)) /dev/urandom >"$d/www/agent-runner"
	sum=$(sha256sum "$d/www/agent-runner" | cut -d' ' -f1)
	local certs=$STG_SOURCE_DIR/test/fixtures/certs
	"$STG_TLS_SERVER" --root "$d/www" --cert "$certs/server.crt" --key "$certs/server.key" >"$d/port" &
	BG_PIDS="$BG_PIDS $!"
	wait_for 10 test -s "$d/port" || { note 7 stigmer fetch "tls-server did not start"; return; }
	port=$(head -n 1 "$d/port")
	url=https://127.0.0.1:$port/agent-runner
	for r in $(seq "$FETCH_RUNS"); do
		rm -f "$d/dl/"*
		o=$("$STG_BENCH" time "$STG_BENCH" fetch "$url" "$d/dl/agent-runner" "$sum" "$certs/ca.crt")
		[ "$(field rc "$o")" = 0 ] || { note 7 stigmer fetch "stg-bench fetch failed: $o"; return; }
		sw+=("$(awk -v w="$(field wall_ns "$o")" 'BEGIN { printf "%.3f", w / 1e6 }')")
		sc+=("$(awk -v c="$(field cpu_ns "$o")" -v m="$FETCH_MIB" 'BEGIN { printf "%.3f", c / 1e6 / m }')")
		command -v curl >/dev/null || { note 7 curl+sha256sum fetch "no curl command"; break; }
		rm -f "$d/dl/"*
		o=$("$STG_BENCH" time sh -c 'curl -sS --fail --cacert "$1" -o "$2" "$3" && echo "$4  $2" | sha256sum -c --quiet -' \
			sh "$certs/ca.crt" "$d/dl/agent-runner" "$url" "$sum")
		[ "$(field rc "$o")" = 0 ] || { note 7 curl fetch "curl + sha256sum failed: $o"; return; }
		cw+=("$(awk -v w="$(field wall_ns "$o")" 'BEGIN { printf "%.3f", w / 1e6 }')")
		cc+=("$(awk -v c="$(field cpu_ns "$o")" -v m="$FETCH_MIB" 'BEGIN { printf "%.3f", c / 1e6 / m }')")
		ratio+=("$(awk -v a="${sw[-1]}" -v b="${cw[-1]}" 'BEGIN { printf "%.3f", a / b }')")
	done
	rec 7 stigmer "lib/fetch, $FETCH_MIB MiB over TLS, verified, fsynced: wall" ms "" "${sw[@]}"
	rec 7 stigmer "lib/fetch: CPU per MiB" ms/MiB "" "${sc[@]}"
	[ ${#cw[@]} -gt 0 ] || return
	rec 7 curl+sha256sum "curl then sha256sum, $FETCH_MIB MiB: wall" ms "" "${cw[@]}"
	rec 7 curl+sha256sum "curl then sha256sum: CPU per MiB" ms/MiB "" "${cc[@]}"
	rec 7 stigmer "fetch wall / curl+sha256sum wall" x "<=1.0" "${ratio[@]}"
}

# --- item 8: size -----------------------------------------------------------------------

item_size() {
	local s
	cp "$STIGMER_BIN" "$W/stigmer-stripped"
	strip "$W/stigmer-stripped"
	s=$(stat -c %s "$W/stigmer-stripped")
	local origin
	origin=$("$STIGMER_BIN" version --json 2>/dev/null | jq -r '.agent_runner.origin // "?"')
	if [ "$origin" != none ]; then
		# Not the figure of item 8 (a smoke run measures the test build).
		rec 8 stigmer "stripped binary, with its payload ($origin)" KiB "" "$(awk -v s="$s" 'BEGIN { printf "%.1f", s / 1024 }')"
		return
	fi
	rec 8 stigmer "stripped binary, no payload" KiB "<=3072" "$(awk -v s="$s" 'BEGIN { printf "%.1f", s / 1024 }')"
	for t in runsv s6-supervise supervise s6-log svlogd multilog; do
		command -v "$t" >/dev/null || continue
		rec 8 "$t" "installed binary (Debian, stripped)" KiB "" \
			"$(awk -v s="$(stat -L -c %s "$(command -v "$t")")" 'BEGIN { printf "%.1f", s / 1024 }')"
	done
}

# --- the run ------------------------------------------------------------------------------

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "mode: $([ "$SMOKE" = yes ] && echo smoke || echo full)"
	echo "kernel: $(uname -srm)"
	echo "cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
	echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "stigmer: $("$STIGMER_BIN" version 2>/dev/null | head -n 1)"
	if [ "$SMOKE" = no ]; then
		for p in runit s6 daemontools supervisor wrk curl coreutils; do
			echo "$p: $(dpkg-query -W -f '${Version}' "$p" 2>/dev/null || echo '?')"
		done
	fi
} >"$OUT/machine.txt"

if want 1 || want 2 || want 3; then
	if start_stacks; then
		if want 1 || want 2; then item_idle_mem; fi
		want 3 && item_restart
	else
		note 1 all idle "the stacks did not start"
	fi
	stop_stacks
fi
want 4 && item_log
want 5 && item_cold
want 6 && item_extract
want 7 && item_fetch
want 8 && item_size
want 9 && item_server

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
jq -s --rawfile m "$OUT/machine.txt" '{machine: $m, results: .}' "$RES" >"$OUT/results.json"
bash "$STG_SOURCE_DIR/bench/table.sh" "$OUT/results.json" >"$OUT/results.md"
cat "$OUT/results.md"
# A smoke run fails when any item could not be measured.
if [ "$SMOKE" = yes ] && jq -e '[.results[] | select(.note != null and (.note | test("not in this build|no curl command") | not))] | length > 0' "$OUT/results.json" >/dev/null; then
	say "smoke: some items could not be measured"
	exit 1
fi
exit 0
