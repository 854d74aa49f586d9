#!/bin/bash
# bench/update-doc.sh [OUT]: puts the machine and the table of a bench run
# (OUT, default bench/out) into docs/benchmarks.md, between its
# "bench:begin" and "bench:end" markers. Numbers are never typed in.
set -eu
cd "$(dirname "$0")/.."
out=${1:-bench/out}
doc=docs/benchmarks.md
[ -f "$out/results.json" ] || { echo "no $out/results.json: run make bench first" >&2; exit 1; }
block=$(mktemp)
{
	echo '<!-- bench:begin (written by bench/update-doc.sh from a run; do not edit) -->'
	echo
	echo '```'
	jq -r .machine "$out/results.json"
	echo '```'
	echo
	cat "$out/results.md"
	echo
	echo '<!-- bench:end -->'
} >"$block"
awk -v blk="$block" '
	/<!-- bench:begin/ { while ((getline l < blk) > 0) print l; skip = 1; next }
	/<!-- bench:end -->/ { skip = 0; next }
	!skip { print }' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
cp "$out/results.json" bench/results.json
cp "$out/results.md" bench/results.md
rm -f "$block"
echo "updated $doc, bench/results.json and bench/results.md from $out"
