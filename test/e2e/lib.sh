# Shared by the end-to-end tests: a temporary STIGMER_HOME, assertions, and
# cleanup of every process the test started. Source it; call `finish` last.
set -u

: "${STIGMER_BIN:?STIGMER_BIN must name the built binary}"
: "${STG_TEST_HELPER:=}"
T=$(mktemp -d /tmp/stg-e2e.XXXXXX)
export STIGMER_HOME="$T/home"
mkdir -p "$STIGMER_HOME"
unset NOTIFY_SOCKET
stg_passed=0
stg_failed=0
stg_current=""

cleanup() {
	# Stop a daemon this test started, then remove the files.
	if [ -S "$STIGMER_HOME/run/supervisor.sock" ] || [ -f "$STIGMER_HOME/run/supervisor.pid" ]; then
		timeout 30 "$STIGMER_BIN" daemon stop >/dev/null 2>&1 || true
	fi
	if [ -f "$STIGMER_HOME/run/supervisor.pid" ]; then
		kill -9 "$(cat "$STIGMER_HOME/run/supervisor.pid")" 2>/dev/null || true
	fi
	for p in ${STG_BG_PIDS:-}; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT

# case NAME: starts a named check; its failures are reported under it.
case_() { stg_current=$1; echo "--- $1"; }

fail() {
	echo "FAIL [$stg_current]: $*" >&2
	stg_failed=$((stg_failed + 1))
}
pass() { stg_passed=$((stg_passed + 1)); }

# run CMD...: runs it, capturing stdout in $out, stderr in $err, status in $rc.
run() {
	out=$("$@" 2>"$T/stderr") && rc=0 || rc=$?
	err=$(cat "$T/stderr")
}

expect_rc() { # expected
	if [ "$rc" = "$1" ]; then pass; else fail "exit $rc, expected $1 (stderr: $err)"; fi
}

expect_in() { # haystack needle
	case "$1" in
	*"$2"*) pass ;;
	*) fail "expected to find '$2' in: $1" ;;
	esac
}

expect_not_in() {
	case "$1" in
	*"$2"*) fail "did not expect '$2' in: $1" ;;
	*) pass ;;
	esac
}

expect_eq() { # actual expected [what]
	if [ "$1" = "$2" ]; then pass; else fail "${3:-value}: got '$1', expected '$2'"; fi
}

# wait_for SECONDS CMD...: polls CMD every 50ms until it succeeds.
wait_for() {
	local limit=$1
	shift
	local end=$(($(date +%s%N) + limit * 1000000000))
	while [ "$(date +%s%N)" -lt "$end" ]; do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.05
	done
	return 1
}

finish() {
	echo "$stg_passed passed, $stg_failed failed"
	[ "$stg_failed" = 0 ]
}

# --- the daemon --------------------------------------------------------------

# helper_stack MODE: a stack of one component, the agent-runner slot running
# the test helper in MODE; the server and workflow-runner are disabled.
helper_stack() {
	cat >"$STIGMER_HOME/config.ini" <<EOC
[component.server]
enabled = no
[component.workflow-runner]
enabled = no
[agent-runner]
path = $STG_TEST_HELPER
[component.agent-runner]
env.STG_HELPER_MODE = $1
EOC
}

status_json() { "$STIGMER_BIN" daemon status --json 2>/dev/null; }
# comp NAME FIELD: a field of a component in `daemon status --json`.
comp() { status_json | jq -r ".components[] | select(.name==\"$1\") | .$2"; }
sup_pid() { cat "$STIGMER_HOME/run/supervisor.pid" 2>/dev/null; }

# Every live process of this test's stack: the supervisor (by its command
# line) and everything it started or they started (by their environment).
stack_procs() {
	local e p
	for e in /proc/[0-9]*/environ; do
		p=${e#/proc/}
		p=${p%/environ}
		[ "$p" = "$$" ] || [ "$p" = "$BASHPID" ] && continue
		if { tr "\0" "\n" <"$e"; } 2>/dev/null | grep -qxF "STIGMER_HOME=$STIGMER_HOME" &&
			{ tr "\0" "\n" <"$e"; } 2>/dev/null | grep -q "^STIGMER_COMPONENT="; then
			alive "$p" && echo "$p"
		elif { tr "\0" " " <"/proc/$p/cmdline"; } 2>/dev/null | grep -q "agent-runner-supervisor --home $STIGMER_HOME "; then
			echo "$p"
		fi
	done
}

# Live processes of this stack that are component NAME (or its children).
comp_procs() {
	local e p
	for e in /proc/[0-9]*/environ; do
		p=${e#/proc/}
		p=${p%/environ}
		if { tr "\0" "\n" <"$e"; } 2>/dev/null | grep -qxF "STIGMER_HOME=$STIGMER_HOME" &&
			{ tr "\0" "\n" <"$e"; } 2>/dev/null | grep -qxF "STIGMER_COMPONENT=$1"; then
			echo "$p"
		fi
	done
}

# alive PID: the process exists and is not a zombie (a zombie whose parent
# is an init that does not reap is dead for our purposes).
alive() {
	local st
	st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# Zombie children of a process.
zombies_of() {
	local s
	for s in /proc/[0-9]*/stat; do
		awk -v pp="$1" '{ sub(/^.*\) /, ""); if ($1 == "Z" && $2 == pp) print FILENAME }' "$s" 2>/dev/null
	done
}

expect_no_stack() {
	local left
	left=$(stack_procs)
	if [ -z "$left" ]; then pass; else fail "processes of the stack left: $left ($(ps -o pid,stat,args -p "$(echo $left | tr ' ' ,)" 2>/dev/null | tail -n +2))"; fi
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % 22000)) # below the ephemeral range (32768-)
		(exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
	done
}
