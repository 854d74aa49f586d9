# stigmer version: text and JSON, with the run-time library versions.
. "$(dirname "$0")/lib.sh"

case_ "text"
run "$STIGMER_BIN" version
expect_rc 0
for w in "stigmer " commit: build: platform: libuv libcurl mbedtls inih jansson sqlite llhttp "mbedTLS/3.6."; do
	expect_in "$out" "$w"
done
run "$STIGMER_BIN" --version
expect_rc 0
expect_in "$out" "mbedTLS/3.6."

case_ "json parses and names mbedTLS 3.6"
run "$STIGMER_BIN" version --json
expect_rc 0
for k in version commit os arch; do
	v=$(printf '%s' "$out" | jq -er ".$k") && pass || fail "no .$k in $out"
done
curl_v=$(printf '%s' "$out" | jq -er '.libraries.libcurl')
expect_in "$curl_v" "mbedTLS/3.6."
mbed_v=$(printf '%s' "$out" | jq -er '.libraries.mbedtls')
case "$mbed_v" in 3.6.*) pass ;; *) fail "mbedtls $mbed_v" ;; esac
for l in libuv inih jansson sqlite llhttp; do
	printf '%s' "$out" | jq -e ".libraries.\"$l\" | length > 0" >/dev/null && pass || fail "no $l"
done
expect_eq "$(printf '%s' "$out" | jq -r .os)" "$(uname -s | tr A-Z a-z)" os

case_ "bad argument"
run "$STIGMER_BIN" version --yaml
expect_rc 2

finish
