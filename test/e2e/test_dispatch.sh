# Dispatch: by link name, by first argument, unknown names, usage errors.
. "$(dirname "$0")/lib.sh"

case_ "link name selects the applet"
ln -s "$STIGMER_BIN" "$T/stigmer-server"
run "$T/stigmer-server" --help
expect_rc 0
expect_in "$out" "Usage: stigmer-server"

case_ "first argument selects the applet"
run "$STIGMER_BIN" internal-server --help
expect_rc 0
expect_in "$out" "API server"
run "$STIGMER_BIN" internal-workflow-runner --help
expect_rc 0
expect_in "$out" "workflow runner"
run "$STIGMER_BIN" agent-runner-supervisor --help
expect_rc 0
expect_in "$out" "supervisor"

case_ "unknown link name exits 127 naming it"
ln -s "$STIGMER_BIN" "$T/stigmer-bogus"
run "$T/stigmer-bogus" --help
expect_rc 127
expect_in "$err" "unknown applet 'stigmer-bogus'"
expect_eq "$(printf '%s\n' "$err" | wc -l)" 1 "lines of the message"

case_ "unknown command is a usage error"
run "$STIGMER_BIN" frobnicate
expect_rc 2
expect_in "$err" "unknown command 'frobnicate'"
expect_in "$err" "stigmer --help"
run "$STIGMER_BIN" --bogus-flag
expect_rc 2
expect_in "$err" "--help"
run "$STIGMER_BIN" internal-server --bogus
expect_rc 2
expect_in "$err" "--help"

case_ "--help hides the internal applets"
run "$STIGMER_BIN" --help
expect_rc 0
expect_in "$out" "Usage: stigmer"
expect_not_in "$out" "internal-server"
expect_not_in "$out" "agent-runner-supervisor"

case_ "--list prints the applets"
run "$STIGMER_BIN" --list
expect_rc 0
for a in agent-runner-supervisor internal-server internal-workflow-runner stigmer stigmer-server stigmer-workflow-runner; do
	expect_in "$out" "$a"
done
expect_eq "$(printf '%s\n' "$out" | sort -c && echo sorted)" sorted "--list order"

finish
