# Every configuration key is documented in docs/config.md, with its default
# as `stigmer config show` reports it.
. "$(dirname "$0")/lib.sh"
doc="$STG_SOURCE_DIR/docs/config.md"

case_ "every key and its default are in docs/config.md"
run "$STIGMER_BIN" config show --json
expect_rc 0
printf '%s' "$out" | jq -r '.sections | to_entries[] | select(.key | startswith("component.") | not)
	| .key as $s | .value | to_entries[] | [$s, .key, .value.value] | @tsv' >"$T/keys"
while IFS=$'\t' read -r section key value; do
	# The section's part of the doc: from its heading to the next one.
	part=$(awk -v h="## [$section]" '$0 == h { on = 1; next } /^## / { on = 0 } on' "$doc")
	row=$(printf '%s\n' "$part" | grep -F "| \`$key\` |" || true)
	if [ -z "$row" ]; then
		fail "[$section] $key is not documented"
		continue
	fi
	# The default is the row's second cell.
	cell=$(printf '%s\n' "$row" | awk -F' [|] ' '{ print $2 }')
	if [ -z "$value" ]; then
		expect_eq "$cell" "empty" "[$section] $key default"
	else
		expect_eq "$cell" "\`$value\`" "[$section] $key default"
	fi
done <"$T/keys"
for key in $(printf '%s' "$out" | jq -r '.sections["component.server"] | keys[]'); do
	grep -q "\`$key\`" "$doc" && pass || fail "[component.NAME] $key is not documented"
done

finish
