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
