# Config: errors name file and line and exit 2; show prints origins;
# environment beats file, flags beat both.
. "$(dirname "$0")/lib.sh"
cfg="$STIGMER_HOME/config.ini"

case_ "a missing file means defaults"
run "$STIGMER_BIN" config show
expect_rc 0
expect_in "$out" "stop_timeout = 10s"
expect_in "$out" "not present: defaults"

case_ "5 parsecs fails naming the file and line"
printf '[supervisor]\n# a comment\nstop_timeout = 5 parsecs\n' >"$cfg"
run "$STIGMER_BIN" config show
expect_rc 2
expect_in "$err" "$cfg:3:"
expect_in "$err" "stop_timeout"
expect_in "$err" "expected a duration"
expect_in "$err" "5 parsecs"

case_ "a bad size fails the same way"
printf '[logs]\nmax_size = 10 megs\n' >"$cfg"
run "$STIGMER_BIN" config show
expect_rc 2
expect_in "$err" "$cfg:2:"

case_ "unknown keys warn with file and line and are not errors"
printf '[supervisor]\nstop_timeout = 2s\nbogus = 1\n' >"$cfg"
run "$STIGMER_BIN" config show
expect_rc 0
expect_in "$err" "$cfg:3: unknown key 'bogus'"
expect_in "$out" "stop_timeout = 2s"
expect_in "$out" "$cfg:2"

case_ "environment overrides the file; flags override both"
STIGMER_SUPERVISOR_STOP_TIMEOUT=7s run "$STIGMER_BIN" config show
expect_in "$out" "stop_timeout = 7s"
expect_in "$out" "env STIGMER_SUPERVISOR_STOP_TIMEOUT"
STIGMER_SUPERVISOR_STOP_TIMEOUT=7s run "$STIGMER_BIN" --set supervisor.stop_timeout=9s config show
expect_in "$out" "stop_timeout = 9s"
expect_in "$out" "flag"
run "$STIGMER_BIN" --log-level debug config show --json
expect_rc 0
expect_eq "$(printf '%s' "$out" | jq -r '.sections.log.level.value')" debug "log level"
STIGMER_SUPERVISOR_SETTLE=soon run "$STIGMER_BIN" config show
expect_rc 2
expect_in "$err" "environment STIGMER_SUPERVISOR_SETTLE"
run "$STIGMER_BIN" --set supervisor.nope=1 config show
expect_rc 2
run "$STIGMER_BIN" --log-level loud config show
expect_rc 2

case_ "--home picks another home"
mkdir -p "$T/other"
printf '[restart]\nmax_restarts = 3\n' >"$T/other/config.ini"
run "$STIGMER_BIN" --home "$T/other" config show
expect_rc 0
expect_in "$out" "max_restarts = 3"

finish
