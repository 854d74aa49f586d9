# stigmer agent-runner path|status|extract|install|reset, and the embedded
# payload that `stigmer version` reports.
. "$(dirname "$0")/lib.sh"
H=${STG_TEST_HELPER:?}
AR=${STG_BUILD_DIR:?}/agent-runner
BIN=$STIGMER_HOME/bin/agent-runner
REC=$STIGMER_HOME/bin/agent-runner.json

sha() { sha256sum "$1" | cut -d' ' -f1; }
# inode and mtime (ns): what a rewrite changes
ident() { stat -c '%i %.9Y' "$1"; }

run "$STIGMER_BIN" version --json
embedded_origin=$(printf '%s' "$out" | jq -r .agent_runner.origin)
embedded_sha=$(printf '%s' "$out" | jq -r .agent_runner.sha256)
embedded_size=$(printf '%s' "$out" | jq -r .agent_runner.size)

case_ "version reports the embedded payload"
case "$embedded_origin" in
reference | path | none) pass ;;
*) fail "origin '$embedded_origin'" ;;
esac
if [ "$embedded_origin" = reference ]; then
	expect_eq "$embedded_sha" "$(sha "$AR")" "sha256 of build/agent-runner"
	expect_eq "$embedded_size" "$(stat -c %s "$AR")" "size of build/agent-runner"
fi
run "$STIGMER_BIN" version
expect_in "$out" "agent-runner: "
[ "$embedded_origin" = none ] || expect_in "$out" "$embedded_sha"

case_ "path"
run "$STIGMER_BIN" agent-runner path
expect_rc 0
expect_eq "$out" "$BIN" "default path"
run env STIGMER_AGENT_RUNNER_PATH=/opt/x/agent-runner "$STIGMER_BIN" agent-runner path
expect_eq "$out" "/opt/x/agent-runner" "path from the environment"
run "$STIGMER_BIN" --set agent-runner.path=/opt/y agent-runner path
expect_eq "$out" "/opt/y" "path from --set"

case_ "usage errors"
run "$STIGMER_BIN" agent-runner
expect_rc 2
run "$STIGMER_BIN" agent-runner frobnicate
expect_rc 2
expect_in "$err" "unknown command 'frobnicate'"
run "$STIGMER_BIN" agent-runner install
expect_rc 2
run "$STIGMER_BIN" agent-runner status --yaml
expect_rc 2
run "$STIGMER_BIN" agent-runner --help
expect_rc 0
expect_in "$out" "Exit status"
run "$STIGMER_BIN" --help
expect_in "$out" "agent-runner status|path|extract|fetch|install PATH|reset"

if [ "$embedded_origin" = none ]; then
	case_ "slim build: nothing to extract"
	run "$STIGMER_BIN" agent-runner status
	expect_rc 3
	expect_in "$out" "needs a fetch"
	run "$STIGMER_BIN" agent-runner extract
	expect_rc 3
	case_ "slim build: install pins, reset leaves it for a fetch"
	run "$STIGMER_BIN" agent-runner install "$H"
	expect_rc 0
	run "$STIGMER_BIN" agent-runner status --json
	expect_rc 0
	expect_eq "$(printf '%s' "$out" | jq -r '.pinned, .embedded.origin' | tr '\n' ' ')" \
		"true none " "pinned, embedded"
	run "$STIGMER_BIN" agent-runner reset
	expect_rc 3
	expect_in "$out" "needs a fetch"
	[ ! -e "$BIN" ] && [ ! -e "$REC" ] && pass || fail "reset left files"
	finish
	exit $?
fi

case_ "status before anything is extracted"
run "$STIGMER_BIN" agent-runner status
expect_rc 0
expect_in "$out" "file:      missing"
expect_in "$out" "record:    none"
expect_in "$out" "binary was missing"
run "$STIGMER_BIN" agent-runner status --json
expect_rc 0
expect_eq "$(printf '%s' "$out" | jq -r '.state, .would_write, .file.exists, .record' | tr '\n' ' ')" \
	"ready true false null " "state, would_write, exists, record"
expect_eq "$(printf '%s' "$out" | jq -r .embedded.sha256)" "$embedded_sha" "embedded sha256"
[ ! -e "$BIN" ] && pass || fail "status wrote $BIN"

case_ "extract"
run "$STIGMER_BIN" agent-runner extract
expect_rc 0
expect_in "$out" "extracted the embedded agent-runner"
expect_in "$out" "binary was missing"
expect_eq "$(sha "$BIN")" "$embedded_sha" "sha256 of the extracted file"
expect_eq "$(stat -c %a "$BIN")" 755 "mode"
expect_eq "$(jq -r .origin "$REC")" embedded "record origin"
expect_eq "$(jq -r .sha256 "$REC")" "$embedded_sha" "record sha256"
expect_eq "$(jq -r .inode "$REC")" "$(stat -c %i "$BIN")" "record inode"
ls -a "$STIGMER_HOME/bin" | grep -q 'tmp-' && fail "temp file left: $(ls -a "$STIGMER_HOME/bin")" || pass

case_ "extract again writes nothing"
before=$(ident "$BIN")
rbefore=$(ident "$REC")
run "$STIGMER_BIN" agent-runner extract
expect_rc 0
expect_in "$out" "is in place"
expect_eq "$(ident "$BIN")" "$before" "binary inode and mtime"
expect_eq "$(ident "$REC")" "$rbefore" "record inode and mtime"
run "$STIGMER_BIN" agent-runner status --json
expect_eq "$(printf '%s' "$out" | jq -r '.matches_record, .would_write, .pinned' | tr '\n' ' ')" \
	"true false false " "matches, would_write, pinned"

case_ "the extracted binary is the reference agent-runner"
if [ "$embedded_origin" = reference ]; then
	run "$BIN" --help
	expect_rc 0
	expect_in "$out" "reference agent-runner"
fi

case_ "deleted binary is re-extracted, with the reason"
rm -f "$BIN"
run "$STIGMER_BIN" agent-runner status
expect_in "$out" "binary was missing"
run "$STIGMER_BIN" agent-runner extract
expect_rc 0
expect_in "$out" "binary was missing"
expect_eq "$(sha "$BIN")" "$embedded_sha" "sha256"

case_ "a changed byte is repaired"
printf 'X' | dd of="$BIN" bs=1 seek=100 conv=notrunc status=none
run "$STIGMER_BIN" agent-runner status --json
expect_eq "$(printf '%s' "$out" | jq -r .matches_record)" false "matches_record"
run "$STIGMER_BIN" agent-runner extract
expect_rc 0
expect_in "$out" "binary changed on disk"
expect_eq "$(sha "$BIN")" "$embedded_sha" "sha256"

case_ "concurrent extracts serialise on the lock"
rm -f "$BIN" "$REC"
pids=""
for i in 1 2 3 4; do
	"$STIGMER_BIN" agent-runner extract >"$T/cx$i.out" 2>&1 &
	pids="$pids $!"
done
n_ok=0
for p in $pids; do wait "$p" && n_ok=$((n_ok + 1)); done
expect_eq "$n_ok" 4 "extracts that succeeded"
expect_eq "$(cat "$T"/cx*.out | grep -c 'extracted the embedded')" 1 "extractions"
expect_eq "$(sha "$BIN")" "$embedded_sha" "sha256"
ls -a "$STIGMER_HOME/bin" | grep -q 'tmp-' && fail "temp file left" || pass

case_ "install pins a hand-built binary"
run "$STIGMER_BIN" agent-runner install "$H" --version my-build-1
expect_rc 0
expect_in "$out" "pinned"
expect_eq "$(sha "$BIN")" "$(sha "$H")" "installed content"
expect_eq "$(jq -r '.origin, .version, .source' "$REC" | tr '\n' ' ')" \
	"installed my-build-1 $(realpath "$H") " "record"
run "$STIGMER_BIN" agent-runner extract
expect_rc 0
expect_in "$out" "using the pinned agent-runner"
expect_eq "$(sha "$BIN")" "$(sha "$H")" "still the installed content"
run "$STIGMER_BIN" agent-runner status --json
expect_eq "$(printf '%s' "$out" | jq -r '.pinned, .record.origin' | tr '\n' ' ')" \
	"true installed " "pinned, origin"
run "$STIGMER_BIN" agent-runner status
expect_in "$out" "pinned:    yes"

case_ "install failures"
run "$STIGMER_BIN" agent-runner install "$T/does-not-exist"
expect_rc 1
expect_in "$err" "open $T/does-not-exist: no such file or directory"
run "$STIGMER_BIN" agent-runner install "$T"
expect_rc 1
expect_eq "$(sha "$BIN")" "$(sha "$H")" "unchanged after failures"

case_ "a pinned binary that is deleted is reported, not replaced"
rm -f "$BIN"
run "$STIGMER_BIN" agent-runner extract
expect_rc 3
expect_in "$err" "is missing"
[ ! -e "$BIN" ] && pass || fail "extracted over a pin"
run "$STIGMER_BIN" agent-runner status
expect_rc 3

case_ "reset unpins and re-extracts"
run "$STIGMER_BIN" agent-runner reset
expect_rc 0
expect_in "$out" "extracted the embedded agent-runner"
expect_eq "$(sha "$BIN")" "$embedded_sha" "sha256"
expect_eq "$(jq -r .origin "$REC")" embedded "record origin"

case_ "a configured path is used as is"
run env STIGMER_AGENT_RUNNER_PATH="$T/nope" "$STIGMER_BIN" agent-runner status
expect_rc 3
expect_in "$out" "configured [agent-runner] path $T/nope: no such file or directory"
run env STIGMER_AGENT_RUNNER_PATH="$T/nope" "$STIGMER_BIN" agent-runner extract
expect_rc 3
[ ! -e "$T/nope" ] && pass || fail "extracted into a configured path"
run env STIGMER_AGENT_RUNNER_PATH="$H" "$STIGMER_BIN" agent-runner status --json
expect_rc 0
expect_eq "$(printf '%s' "$out" | jq -r '.configured, .file.sha256' | tr '\n' ' ')" \
	"true $(sha "$H") " "configured, sha256"
run env STIGMER_AGENT_RUNNER_PATH="$H" "$STIGMER_BIN" agent-runner install "$AR"
expect_rc 1
expect_in "$err" "[agent-runner] path is set"
run env STIGMER_AGENT_RUNNER_PATH="$H" "$STIGMER_BIN" agent-runner reset
expect_rc 1

finish
