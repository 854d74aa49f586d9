# The control socket: malformed and oversize requests get errors, the
# supervisor lives on; notifications from strangers are ignored.
. "$(dirname "$0")/lib.sh"
helper_stack "notify-ready"
run "$STIGMER_BIN" daemon start
expect_rc 0
sock="$STIGMER_HOME/run/supervisor.sock"
sup=$(sup_pid)

send() { # bytes-file
	"$STG_TEST_HELPER" ctl-send "$sock" "$1"
}

case_ "malformed JSON"
printf '{"cmd": "status",\n' >"$T/req"
r=$(send "$T/req")
expect_eq "$(printf '%s' "$r" | head -n1 | jq -r .error.code)" bad_request
expect_in "$r" "malformed JSON"

case_ "not an object, no cmd, unknown cmd"
printf '[1,2]\n' >"$T/req"
expect_eq "$(send "$T/req" | jq -r .error.code)" bad_request
printf '{"x":1}\n' >"$T/req"
expect_in "$(send "$T/req")" "missing"
printf '{"cmd":"explode"}\n' >"$T/req"
expect_in "$(send "$T/req")" "unknown cmd"
printf '{"cmd":"logs","tail":"many"}\n' >"$T/req"
expect_eq "$(send "$T/req" | jq -r .error.code)" bad_request
printf '{"cmd":"restart","component":"nope"}\n' >"$T/req"
expect_eq "$(send "$T/req" | jq -r .error.code)" unknown_component

case_ "a line over 64 KiB"
head -c 70000 /dev/zero | tr '\0' 'a' >"$T/req"
expect_eq "$(send "$T/req" | jq -r .error.code)" too_long
{ printf '{"cmd":"status","pad":"'; head -c 70000 /dev/zero | tr '\0' 'a'; printf '"}\n'; } >"$T/req"
expect_eq "$(send "$T/req" | jq -r .error.code)" too_long

case_ "two requests on one connection"
printf '{"cmd":"status"}\n{"cmd":"status"}\n' >"$T/req"
expect_eq "$(send "$T/req" | jq -r .ok | tr '\n' ' ')" "true true " "replies"

case_ "another user is refused"
if command -v setpriv >/dev/null && [ "$(id -u)" = 0 ]; then
	# Open the door that the modes keep shut, to reach the uid check itself.
	chmod 711 "$STIGMER_HOME" "$STIGMER_HOME/run"
	chmod 666 "$sock"
	cp "$STG_TEST_HELPER" "$T/helper"
	chmod 755 "$T" "$T/helper"
	printf '{"cmd":"status"}\n' >"$T/req"
	chmod 644 "$T/req"
	r=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$T/helper" ctl-send "$sock" "$T/req")
	expect_eq "$(printf '%s' "$r" | jq -r .error.code)" forbidden "reply to another uid"
	chmod 700 "$STIGMER_HOME" "$STIGMER_HOME/run"
	chmod 600 "$sock"
else
	echo "skipped: needs root and setpriv to act as another user"
fi

case_ "the supervisor lives on"
kill -0 "$sup" && pass || fail "supervisor died"
run "$STIGMER_BIN" daemon status
expect_rc 0

case_ "READY=1 from a process that is not a child is ignored"
run "$STIGMER_BIN" daemon restart agent-runner
helper_stack "never-ready"
kill -HUP "$sup"
wait_for 5 grep -q "configuration reloaded" "$STIGMER_HOME/logs/supervisor.log"
"$STIGMER_BIN" daemon restart agent-runner >/dev/null 2>&1 &
wait_for 5 sh -c "[ \"\$($STIGMER_BIN daemon status --json | jq -r '.components[2].state')\" = starting ]" && pass || fail "not starting"
NOTIFY_SOCKET="$STIGMER_HOME/run/notify.sock" "$STG_TEST_HELPER" notify-send READY=1
sleep 0.3
expect_eq "$(comp agent-runner state)" starting "state after a stranger's READY=1"
run "$STIGMER_BIN" daemon stop
expect_rc 0
expect_no_stack

finish
