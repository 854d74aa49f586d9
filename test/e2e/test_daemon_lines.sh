# 200,000 numbered lines across rotations and a restart: every line exactly
# once, in order, in the files and in `daemon logs -f`.
. "$(dirname "$0")/lib.sh"

mode() { # the agent-runner's mode, applied by SIGHUP + restart
	helper_stack "$1"
	cat >>"$STIGMER_HOME/config.ini" <<EOC
notify = no
settle = 50ms
[logs]
max_size = 512KiB
keep = 100
EOC
}

mode "sleep"
run "$STIGMER_BIN" daemon start
expect_rc 0
sup=$(sup_pid)

"$STIGMER_BIN" daemon logs -f -n 0 --no-color agent-runner >"$T/follow.out" 2>"$T/follow.err" &
follower=$!
STG_BG_PIDS="$follower"
# The follower is subscribed once the supervisor's notes reach it: restart
# the component until its "started" note is in the follower's output (a
# restart before the follower subscribed is not shown, with -n 0).
connected=no
for i in 1 2 3 4 5 6 7 8 9 10; do
	run "$STIGMER_BIN" daemon restart agent-runner
	if wait_for 3 grep -q "started (pid" "$T/follow.out"; then connected=yes; break; fi
done
[ "$connected" = yes ] && pass || fail "follower not connected"

file_lines() { cat "$STIGMER_HOME"/logs/agent-runner.log* | grep -c ' out line '; }

# The follower is stopped for the whole first run: the supervisor's queue
# for it fills (8 MiB), it falls behind, and is caught up from the ring
# (8 MiB, about 77,000 of these records) once it reads again.
case_ "first run: lines 1..100000, the follower stopped meanwhile"
mode "lines 100000 0 1"
kill -HUP "$sup"
wait_for 5 grep -q "configuration reloaded" "$STIGMER_HOME/logs/supervisor.log"
kill -STOP "$follower"
run "$STIGMER_BIN" daemon restart agent-runner
wait_for 60 sh -c "[ \$(cat '$STIGMER_HOME'/logs/agent-runner.log* | grep -c ' out line ') -ge 100000 ]" && pass || fail "first 100000 lines not in the files ($(file_lines))"
kill -CONT "$follower"
wait_for 60 sh -c "[ \$(grep -c '| line ' '$T/follow.out') -ge 100000 ]" && pass || fail "first 100000 lines not followed ($(grep -c '| line ' "$T/follow.out"))"

case_ "second run after a crash: lines 100001..200000"
mode "lines 100000 0 100001"
kill -HUP "$sup"
wait_for 5 sh -c "[ \$(grep -c 'configuration reloaded' '$STIGMER_HOME/logs/supervisor.log') -ge 2 ]"
kill -9 "$(comp agent-runner pid)"
wait_for 60 sh -c "[ \$(grep -c '| line ' '$T/follow.out') -ge 200000 ]" && pass || fail "200000 lines not followed ($(grep -c '| line ' "$T/follow.out"))"

run "$STIGMER_BIN" daemon stop
expect_rc 0
wait_for 10 sh -c "! kill -0 $follower 2>/dev/null"

case_ "logs -f: every line exactly once, in order"
grep '| line ' "$T/follow.out" | sed 's/.*| line //' >"$T/follow.nums"
seq -f '%08g' 1 200000 >"$T/expected"
if cmp -s "$T/follow.nums" "$T/expected"; then pass; else
	fail "followed lines differ: $(diff "$T/follow.nums" "$T/expected" | head -5)"
fi
expect_not_in "$(cat "$T/follow.out")" "not shown"

case_ "files: rotated, every line exactly once, in order"
n=$(ls "$STIGMER_HOME/logs/" | grep -c '^agent-runner.log.[0-9]')
[ "$n" -ge 2 ] && pass || fail "expected rotations, found $n rotated files"
for f in $(ls "$STIGMER_HOME/logs/" | grep '^agent-runner.log.[0-9]' | sort -t. -k3,3 -rn) agent-runner.log; do
	cat "$STIGMER_HOME/logs/$f"
done | awk '$3 == "out" { print $5 }' >"$T/file.nums"
if cmp -s "$T/file.nums" "$T/expected"; then pass; else
	fail "file lines differ: $(diff "$T/file.nums" "$T/expected" | head -5)"
fi
for f in "$STIGMER_HOME"/logs/agent-runner.log*; do
	s=$(stat -c %s "$f")
	[ "$s" -le $((512 * 1024)) ] && pass || fail "$f is $s bytes, over max_size"
done

finish
