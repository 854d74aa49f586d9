# stigmer --install [-s] DIR: creates the links, idempotent, never
# overwrites a file that is not a link to this binary.
. "$(dirname "$0")/lib.sh"

links="agent-runner-supervisor stigmer-server stigmer-workflow-runner"

case_ "symbolic links are created"
mkdir "$T/sym"
run "$STIGMER_BIN" --install -s "$T/sym"
expect_rc 0
for l in $links; do
	if [ -L "$T/sym/$l" ] && [ "$(readlink -f "$T/sym/$l")" = "$(readlink -f "$STIGMER_BIN")" ]; then pass; else fail "$l is not a symlink to the binary"; fi
done
run "$T/sym/stigmer-server" --help
expect_rc 0
expect_in "$out" "Usage: stigmer-server"

case_ "a second run is a no-op"
run "$STIGMER_BIN" --install -s "$T/sym"
expect_rc 0
expect_in "$out" "already a link"

case_ "hard links, when on the same file system"
cp "$STIGMER_BIN" "$T/stigmer"
mkdir "$T/hard"
run "$T/stigmer" --install "$T/hard"
expect_rc 0
for l in $links; do
	if [ "$(stat -c %i "$T/hard/$l")" = "$(stat -c %i "$T/stigmer")" ]; then pass; else fail "$l is not a hard link"; fi
done
run "$T/stigmer" --install "$T/hard"
expect_rc 0

case_ "a foreign file is never overwritten"
mkdir "$T/foreign"
echo "precious" >"$T/foreign/stigmer-server"
ln -s /bin/true "$T/foreign/stigmer-workflow-runner"
run "$STIGMER_BIN" --install -s "$T/foreign"
expect_rc 1
expect_in "$err" "$T/foreign/stigmer-server exists and is not a link to this binary"
expect_in "$err" "$T/foreign/stigmer-workflow-runner exists and points to /bin/true"
expect_eq "$(cat "$T/foreign/stigmer-server")" precious "content of the foreign file"
expect_eq "$(readlink "$T/foreign/stigmer-workflow-runner")" /bin/true "foreign link"
# The one free name was still linked.
if [ -L "$T/foreign/agent-runner-supervisor" ]; then pass; else fail "free name not linked"; fi

case_ "usage errors"
run "$STIGMER_BIN" --install
expect_rc 2
run "$STIGMER_BIN" --install -s "$T/nonexistent"
expect_rc 1
expect_in "$err" "$T/nonexistent"

finish
