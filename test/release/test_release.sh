# The release build (packaging/release.sh), run by `make test-release`:
# two builds from clean, the second from a copy of the tree at another path,
# give byte-identical assets; exactly the listed assets; valid checksums;
# signatures that verify (and a tampered file that does not); a tarball with
# the expected entries, fixed owners and times, whose binary runs `version`
# and embeds exactly the agent-runner asset.
# Not under ctest: it builds twice (about 10 s each here; a few minutes on a
# cold, slow machine).
set -u
src=$(cd "$(dirname "$0")/../.." && pwd -P)
T=$(mktemp -d /tmp/stg-release.XXXXXX)
trap 'rm -rf "$T"' EXIT
passed=0 failed=0
fail() { echo "FAIL: $*" >&2; failed=$((failed + 1)); }
pass() { passed=$((passed + 1)); }
check() { # description command...
	local what=$1
	shift
	if "$@"; then pass; else fail "$what"; fi
}

v=0.0.1
export SOURCE_DATE_EPOCH=$(git -C "$src" log -1 --format=%ct)
start=$(date +%s)

echo "--- build 1 (signed), from $src"
openssl ecparam -name prime256v1 -genkey -noout -out "$T/key.pem" 2>/dev/null
openssl ec -in "$T/key.pem" -pubout -out "$T/pub.pem" 2>/dev/null
STIGMER_SIGNING_KEY=$T/key.pem sh "$src/packaging/release.sh" "v$v" "$T/out1" 2>"$T/log1" ||
	{ cat "$T/log1" >&2; fail "release 1 failed"; }

echo "--- build 2 (unsigned), from a copy of the tree at another path"
mkdir "$T/copy"
(cd "$src" && tar --exclude='./build' --exclude='./build-*' --exclude='./dist' -cf - .) |
	(cd "$T/copy" && tar -xf -)
sh "$T/copy/packaging/release.sh" "$v" "$T/out2" 2>"$T/log2" ||
	{ cat "$T/log2" >&2; fail "release 2 failed"; }
echo "two release builds took $(($(date +%s) - start))s"

case $(uname -s) in Linux) os=linux ;; Darwin) os=darwin ;; esac
case $(uname -m) in x86_64 | amd64) arch=amd64 ;; *) arch=arm64 ;; esac
tb=stigmer-$v-$os-$arch.tar.gz
ar=agent-runner-$v-$os-$arch

echo "--- exactly the listed assets"
l2=$(LC_ALL=C ls "$T/out2" | tr '\n' ' ')
check "unsigned assets: $l2" [ "$l2" = "$ar $ar.sha256 $tb $tb.sha256 " ]
l1=$(LC_ALL=C ls "$T/out1" | tr '\n' ' ')
check "signed assets: $l1" [ "$l1" = "$ar $ar.sha256 $ar.sig $tb $tb.sha256 $tb.sig " ]

echo "--- byte-identical"
for f in "$tb" "$ar" "$tb.sha256" "$ar.sha256"; do
	check "$f differs between the two builds" cmp -s "$T/out1/$f" "$T/out2/$f"
done

echo "--- checksums: '<hex>  <name>' and correct"
for f in "$tb" "$ar"; do
	line=$(cat "$T/out2/$f.sha256")
	check "$f.sha256 format: $line" sh -c "printf '%s\n' '$line' | grep -Eqx '[0-9a-f]{64}  $f'"
	check "$f.sha256 does not match" sh -c "cd '$T/out2' && sha256sum -c --quiet '$f.sha256'"
done

echo "--- signatures"
for f in "$tb" "$ar"; do
	check "$f.sig does not verify" openssl dgst -sha256 -verify "$T/pub.pem" \
		-signature "$T/out1/$f.sig" "$T/out1/$f" >/dev/null
done
cp "$T/out1/$ar" "$T/tampered"
printf 'x' >>"$T/tampered"
if openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/out1/$ar.sig" "$T/tampered" >/dev/null 2>&1; then
	fail "a tampered agent-runner verified"
else pass; fi

echo "--- the tarball"
base=stigmer-$v-$os-$arch
want="$base/ $base/LICENSE $base/completions/ $base/completions/_stigmer \
$base/completions/stigmer.bash $base/completions/stigmer.fish $base/stigmer $base/stigmer.1 \
$base/units/ $base/units/launchd/ $base/units/launchd/dev.stigmer.daemon.plist \
$base/units/systemd/ $base/units/systemd/stigmer-system.service \
$base/units/systemd/stigmer.service $base/units/systemd/stigmer.sysusers"
[ -f "$src/README.md" ] && want=$(printf '%s\n' $want "$base/README.md" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
got=$(tar -tzf "$T/out2/$tb" | tr '\n' ' ' | sed 's/ $//')
check "tarball entries: $got" [ "$got" = "$(printf '%s ' $want | sed 's/ $//')" ]
owners=$(tar -tvzf "$T/out2/$tb" | awk '{print $2}' | sort -u)
check "tarball owners: $owners" [ "$owners" = "0/0" ]
mtimes=$(tar -tvzf "$T/out2/$tb" --full-time 2>/dev/null | awk '{print $4" "$5}' | sort -u)
check "tarball times: $mtimes" [ "$mtimes" = "$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')" ]
mkdir "$T/x"
tar -xzf "$T/out2/$tb" -C "$T/x"
bin=$T/x/$base/stigmer
check "the binary does not say version $v" sh -c "'$bin' version | head -n1 | grep -qx 'stigmer $v'"
check "the build type is not Release" sh -c "'$bin' version | grep -q 'build: *Release'"
emb=$("$bin" version --json | jq -r .agent_runner.sha256)
check "the binary embeds $emb, not the agent-runner asset" [ "$emb" = "$(cut -d' ' -f1 "$T/out2/$ar.sha256")" ]
check "the binary carries a build path" sh -c "! grep -a -q -e '$T' -e '$src' '$bin' '$T/out2/$ar'"
if [ "$os" = linux ]; then
	check "the binary is not stripped" sh -c "! readelf -S '$bin' | grep -q '\.symtab'"
	check "libuv/jansson/sqlite/inih are not static" sh -c "! ldd '$bin' | grep -Eq 'lib(uv|jansson|sqlite3|inih)'"
fi

echo "--- a bad version is refused"
if sh "$src/packaging/release.sh" 1.2 "$T/bad" 2>/dev/null; then fail "release.sh accepted version 1.2"; else pass; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
