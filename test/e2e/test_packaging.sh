# Packaging: the service templates as install-service renders them
# (systemd-analyze verify, plistlib), install-service/uninstall-service
# --dry-run and refusals, the install tree (packaging/install.sh, what
# `make install` runs), the man page and the completions against the
# commands and flags the binary's --help texts name, the Homebrew formula.
# The release build is test/release/test_release.sh (make test-release).
. "$(dirname "$0")/lib.sh"

src=${STG_SOURCE_DIR:?}
pk=$src/packaging
exe=$(readlink -f "$STIGMER_BIN")
skip() { echo "SKIP [$stg_current]: $*"; }

# The text between "# --- begin PATH" and "# --- end PATH" of a dry run.
section() { # output path
	printf '%s\n' "$1" | sed -n "\\|^# --- begin $2\$|,\\|^# --- end $2\$|{\\|^# --- |d;p}"
}

# --- the user unit ------------------------------------------------------------------
case_ "install-service --dry-run (systemd user): the unit, the commands, nothing written"
export XDG_CONFIG_HOME="$T/xdg"
run "$STIGMER_BIN" daemon install-service --dry-run
expect_rc 0
unit_path=$XDG_CONFIG_HOME/systemd/user/stigmer.service
expect_in "$out" "# write $unit_path (mode 0644):"
user_unit=$(section "$out" "$unit_path")
expect_in "$user_unit" "ExecStart=$exe daemon run"
expect_in "$user_unit" "Environment=STIGMER_HOME=$STIGMER_HOME"
expect_in "$user_unit" "Type=notify"
expect_in "$out" "systemctl --user daemon-reload
systemctl --user enable stigmer.service
systemctl --user restart stigmer.service"
[ ! -e "$unit_path" ] && pass || fail "--dry-run wrote $unit_path"
# The unit is the template in packaging/, filled in: one copy, no drift.
want=$(sed -e "s#@STIGMER@#$exe#g" -e "s#@STIGMER_HOME@#$STIGMER_HOME#g" "$pk/systemd/stigmer.service")
expect_eq "$user_unit" "$want" "the rendered user unit vs packaging/systemd/stigmer.service"

case_ "no STIGMER_HOME chosen: no Environment= line; --home is made absolute"
run env -u STIGMER_HOME "$STIGMER_BIN" daemon install-service --dry-run
expect_rc 0
expect_not_in "$out" "STIGMER_HOME="
want=$(sed -e "s#@STIGMER@#$exe#g" -e "/@STIGMER_HOME@/d" "$pk/systemd/stigmer.service")
expect_eq "$(section "$out" "$unit_path")" "$want" "unit without a home"
(cd "$T" && env -u STIGMER_HOME "$STIGMER_BIN" --home rel/home daemon install-service --dry-run) >"$T/o" 2>&1
expect_in "$(cat "$T/o")" "Environment=STIGMER_HOME=$(cd "$T" && pwd -P)/rel/home"
run env -u XDG_CONFIG_HOME HOME="$T/h" "$STIGMER_BIN" daemon install-service --dry-run
expect_in "$out" "# write $T/h/.config/systemd/user/stigmer.service"

case_ "uninstall-service --dry-run: disable, remove, reload"
run "$STIGMER_BIN" daemon uninstall-service --dry-run
expect_rc 0
expect_in "$out" "systemctl --user disable --now stigmer.service   # a failure is ignored
rm $unit_path
systemctl --user daemon-reload"

# --- the system unit ---------------------------------------------------------------
case_ "install-service --system --dry-run: the system unit and the sysusers file"
run "$STIGMER_BIN" daemon install-service --system --dry-run
expect_rc 0
sys_unit=$(section "$out" /etc/systemd/system/stigmer.service)
expect_eq "$sys_unit" "$(sed "s#@STIGMER@#$exe#g" "$pk/systemd/stigmer-system.service")" "system unit"
expect_in "$sys_unit" "User=stigmer"
expect_eq "$(section "$out" /etc/sysusers.d/stigmer.conf)" "$(cat "$pk/systemd/stigmer.sysusers")" "sysusers"
expect_in "$out" "systemd-sysusers /etc/sysusers.d/stigmer.conf
systemctl daemon-reload
systemctl enable stigmer.service
systemctl restart stigmer.service"
run "$STIGMER_BIN" --home "$T/x" daemon install-service --system --dry-run
expect_rc 2
expect_in "$err" "--home does not apply"

# --- systemd-analyze verify -------------------------------------------------------
case_ "systemd-analyze verify: the user and the system unit"
printf '%s\n' "$user_unit" >"$T/stigmer.service"
mkdir -p "$T/sys" "$T/rt" && chmod 0700 "$T/rt"
printf '%s\n' "$sys_unit" >"$T/sys/stigmer.service"
# A unit with an unknown key and a missing program: verify must object.
printf '[Service]\nType=notify\nExecStart=%s/nonexistent daemon run\nBogusKey=1\n' "$T" >"$T/bad.service"
printf '[Service]\nType=oneshot\nExecStart=/bin/true\n' >"$T/good.service"
verify() { # --user|--system file: output in $vout, status in $vrc
	vout=$(cd "$(dirname "$2")" && XDG_RUNTIME_DIR=$T/rt SYSTEMD_LOG_LEVEL=warning \
		systemd-analyze verify --man=no "$1" "./$(basename "$2")" 2>&1) && vrc=0 || vrc=$?
}
if ! command -v systemd-analyze >/dev/null; then
	skip "systemd-analyze is not installed (Debian package systemd)"
else
	verify --system "$T/good.service"
	if [ "$vrc" != 0 ]; then
		skip "systemd-analyze cannot run here: on a trivial unit it said: $vout"
	else
		verify --user "$T/stigmer.service"
		expect_eq "$vrc:$vout" "0:" "verify --user stigmer.service"
		verify --system "$T/sys/stigmer.service"
		expect_eq "$vrc:$vout" "0:" "verify --system stigmer.service (system)"
		verify --system "$T/bad.service"
		[ "$vrc" != 0 ] && pass || fail "verify accepted a broken unit: $vout"
		expect_in "$vout" "BogusKey"
	fi
fi

# --- launchd ---------------------------------------------------------------------------
case_ "install-service --dry-run --platform launchd: the plist parses and says what we mean"
export STIGMER_HOME="$T/home & <co>"
run "$STIGMER_BIN" daemon install-service --dry-run --platform launchd
expect_rc 0
plist_path=$HOME/Library/LaunchAgents/dev.stigmer.daemon.plist
expect_in "$out" "launchctl bootout gui/$(id -u)/dev.stigmer.daemon   # a failure is ignored
launchctl enable gui/$(id -u)/dev.stigmer.daemon
launchctl bootstrap gui/$(id -u) $plist_path"
section "$out" "$plist_path" >"$T/agent.plist"
if command -v python3 >/dev/null && python3 -c 'import plistlib' 2>/dev/null; then
	run python3 - "$T/agent.plist" "$exe" "$STIGMER_HOME" <<'EOF'
import plistlib, sys
p = plistlib.load(open(sys.argv[1], 'rb'))
exe, home = sys.argv[2], sys.argv[3]
checks = [
    (p['Label'], 'dev.stigmer.daemon'),
    (p['ProgramArguments'], [exe, 'daemon', 'run', '--no-echo']),
    (p['RunAtLoad'], True),
    (p['KeepAlive'], {'SuccessfulExit': False}),
    (type(p['ThrottleInterval']), int),
    (p['StandardOutPath'], home + '/logs/launchd.log'),
    (p['StandardErrorPath'], home + '/logs/launchd.log'),
    (p['EnvironmentVariables'], {'STIGMER_HOME': home}),
]
bad = [f'{a!r} != {b!r}' for a, b in checks if a != b]
print('\n'.join(bad) or 'ok')
EOF
	expect_eq "$out" "ok" "plist keys"
	run env -u STIGMER_HOME python3 -c 'import plistlib,sys; plistlib.loads(sys.stdin.buffer.read())' <<'EOF'
<?xml version="1.0"?><plist version="1.0"><dict><key>a</key><string>x & y</string></dict></plist>
EOF
	[ "$rc" != 0 ] && pass || fail "plistlib accepted a broken plist"
	out=$(env -u STIGMER_HOME "$STIGMER_BIN" daemon install-service --dry-run --platform launchd)
	section "$out" "$plist_path" >"$T/agent2.plist"
	run python3 -c 'import plistlib,sys; p=plistlib.load(open(sys.argv[1],"rb")); print("EnvironmentVariables" in p, p["StandardOutPath"])' "$T/agent2.plist"
	expect_eq "$out" "False $HOME/.stigmer/logs/launchd.log" "plist without a chosen home"
elif command -v xmllint >/dev/null; then
	run xmllint --noout "$T/agent.plist"
	expect_rc 0
else
	skip "neither python3 nor xmllint to parse the plist"
fi
export STIGMER_HOME="$T/home"

# --- refusals -------------------------------------------------------------------------
case_ "install-service refuses where the service manager is absent, and writes nothing"
run env PATH=/nonexistent "$exe" daemon install-service
expect_rc 1
expect_in "$err" "systemctl is not in PATH"
[ ! -e "$unit_path" ] && pass || fail "a refused install wrote $unit_path"
if [ ! -d /run/systemd/system ]; then
	run "$STIGMER_BIN" daemon install-service
	expect_rc 1
	expect_in "$err" "systemd is not running here"
	[ ! -e "$unit_path" ] && pass || fail "a refused install wrote $unit_path"
fi
run "$STIGMER_BIN" daemon install-service --platform launchd
expect_rc 2
expect_in "$err" "--platform needs --dry-run"
run "$STIGMER_BIN" daemon install-service --bogus
expect_rc 2
run "$STIGMER_BIN" daemon install-service --dry-run --platform launchd --system
expect_rc 1
expect_in "$err" "only the systemd service has a system-wide variant"
run "$STIGMER_BIN" daemon install-service --help
expect_rc 0
expect_in "$out" "Usage: stigmer daemon install-service"

# --- a real install against a stand-in systemctl ----------------------------------------
# In a private mount namespace with /run/systemd/system present, and
# systemctl and systemd-sysusers on PATH as scripts that log their arguments.
case_ "install-service and uninstall-service run the commands in order (stand-in systemctl)"
mkdir -p "$T/fakebin" "$T/xrt/systemd"
: >"$T/xrt/systemd/private"
for p in systemctl systemd-sysusers; do
	cat >"$T/fakebin/$p" <<EOF
#!/bin/sh
echo "$p \$*" >>"$T/calls"
case "\$*" in *is-active*) exit \${FAKE_ACTIVE_RC:-3} ;; esac
case "\$*" in *"\${FAKE_FAIL:-@none@}"*) echo "$p: refused" >&2; exit 4 ;; esac
exit 0
EOF
	chmod +x "$T/fakebin/$p"
done
in_ns() {
	unshare -m sh -c 'mount -t tmpfs none /run && mkdir -p /run/systemd/system && exec "$@"' _ \
		env PATH="$T/fakebin:$PATH" XDG_RUNTIME_DIR="$T/xrt" "$@"
}
if ! in_ns true 2>/dev/null; then
	skip "cannot make a private mount namespace here (unshare -m): the real install path is not run"
else
	: >"$T/calls"
	run in_ns "$STIGMER_BIN" daemon install-service
	expect_rc 0
	expect_eq "$(cat "$T/calls")" "systemctl --user daemon-reload
systemctl --user enable stigmer.service
systemctl --user restart stigmer.service" "commands run"
	expect_eq "$(cat "$unit_path" 2>/dev/null)" "$user_unit" "the unit written"
	expect_eq "$(stat -c %a "$unit_path" 2>/dev/null)" 644 "the unit's mode"
	expect_in "$out" "stigmer: wrote $unit_path"
	expect_in "$out" "stigmer: ran \`systemctl --user enable stigmer.service\`"
	ls "$(dirname "$unit_path")" | grep -q tmp && fail "a temp file was left" || pass

	: >"$T/calls"
	FAKE_FAIL=enable run in_ns "$STIGMER_BIN" daemon install-service
	expect_rc 1
	expect_in "$err" "stigmer: \`systemctl --user enable stigmer.service\` failed (exit status 4)"
	expect_not_in "$(cat "$T/calls")" "restart"

	: >"$T/calls"
	run in_ns "$STIGMER_BIN" daemon uninstall-service
	expect_rc 0
	expect_eq "$(cat "$T/calls")" "systemctl --user disable --now stigmer.service
systemctl --user daemon-reload" "uninstall commands"
	[ ! -e "$unit_path" ] && pass || fail "uninstall left $unit_path"
	run in_ns "$STIGMER_BIN" daemon uninstall-service
	expect_rc 0
	expect_in "$out" "no service is installed"

	# --system as root would write the real /etc: only the refusal, as a user.
	if [ "$(id -u)" != 0 ]; then
		run in_ns "$exe" daemon install-service --system
		expect_rc 1
		expect_in "$err" "must be run as root"
	fi
fi

case_ "install-service refuses while a daemon started by 'daemon start' runs"
if in_ns true 2>/dev/null; then
	printf '[server]\nlisten = 127.0.0.1:%s\n' "$(free_port)" >"$STIGMER_HOME/config.ini"
	run "$STIGMER_BIN" daemon start
	expect_rc 0
	: >"$T/calls"
	run in_ns "$STIGMER_BIN" daemon install-service
	expect_rc 1
	expect_in "$err" "a daemon started outside the service manager is running"
	[ ! -e "$unit_path" ] && pass || fail "a refused install wrote $unit_path"
	# The same daemon under the service manager (is-active says yes): go on.
	FAKE_ACTIVE_RC=0 run in_ns "$STIGMER_BIN" daemon install-service
	expect_rc 0
	expect_in "$(cat "$T/calls")" "systemctl --user restart stigmer.service"
	run "$STIGMER_BIN" daemon stop
	expect_rc 0
	rm -f "$unit_path"
fi

# --- the install tree ---------------------------------------------------------------
case_ "packaging/install.sh (make install): the tree, relative links that work"
run sh "$pk/install.sh" "$STIGMER_BIN" /usr "$T/dest"
expect_rc 0
d=$T/dest/usr
for f in bin/stigmer share/man/man1/stigmer.1 share/bash-completion/completions/stigmer \
	share/zsh/site-functions/_stigmer share/fish/vendor_completions.d/stigmer.fish \
	lib/systemd/user/stigmer.service lib/systemd/system/stigmer.service \
	lib/sysusers.d/stigmer.conf share/stigmer/launchd/dev.stigmer.daemon.plist; do
	[ -f "$d/$f" ] && pass || fail "$f is missing"
done
[ -x "$d/bin/stigmer" ] && pass || fail "bin/stigmer is not executable"
for l in agent-runner-supervisor stigmer-server stigmer-workflow-runner; do
	expect_eq "$(readlink "$d/bin/$l")" stigmer "link $l"
done
run "$d/bin/stigmer-server" --help
expect_rc 0
expect_in "$out" "Usage: stigmer-server"
# The tree moved elsewhere still works: the links are relative.
mv "$T/dest" "$T/moved"
run "$T/moved/usr/bin/stigmer-workflow-runner" --help
expect_rc 0
expect_in "$(cat "$T/moved/usr/lib/systemd/user/stigmer.service")" "ExecStart=/usr/bin/stigmer daemon run"
expect_in "$(cat "$T/moved/usr/lib/systemd/system/stigmer.service")" "ExecStart=/usr/bin/stigmer daemon run"
expect_not_in "$(cat "$T/moved/usr/lib/systemd/user/stigmer.service" "$T/moved/usr/lib/systemd/system/stigmer.service")" "@STIGMER"
run sh "$pk/install.sh" "$STIGMER_BIN" /usr "$T/moved"
expect_rc 0
expect_eq "$(readlink "$T/moved/usr/bin/stigmer-server")" stigmer "link after a second install"

# --- man page and completions against the binary's help ------------------------------
case_ "the man page renders without warnings"
if command -v groff >/dev/null; then
	run sh -c "LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z '$pk/man/stigmer.1' 2>&1"
	expect_eq "$out" "" "groff warnings"
else
	skip "groff is not installed"
fi

case_ "every command and flag of the --help texts is in the man page and each completion"
helps=$("$STIGMER_BIN" --help; for c in daemon agent-runner config version; do
	"$STIGMER_BIN" "$c" --help 2>/dev/null; done; "$STIGMER_BIN" daemon logs --help
	"$STIGMER_BIN" daemon install-service --help
	# Commands added in parallel; nothing on stdout until they exist.
	for c in run executions "executions list" "executions show" "executions logs" \
		"agent-runner fetch"; do
		# shellcheck disable=SC2086
		"$STIGMER_BIN" $c --help 2>/dev/null
	done)
# The commands: the first word of each "  word" line in the command lists.
words=$(printf '%s\n' "$helps" | sed -n 's/^  \([a-z][a-z-]*\)\( .*\)\{0,1\}$/\1/p' | sort -u)
# (--user is systemctl's, quoted in the install-service text)
flags=$(printf '%s\n' "$helps" | grep -o -- '--[a-z][a-z-]*' | grep -vx -- --user | sort -u)
expect_in "$words" "install-service"
expect_in "$flags" "--dry-run"
man_text=$(sed 's/\\-/-/g' "$pk/man/stigmer.1")
for w in $words $flags; do
	expect_in "$man_text" "$w"
	for c in stigmer.bash _stigmer stigmer.fish; do
		pat=$w
		# fish spells --flag as "-l flag"
		case $c:$w in stigmer.fish:--*) pat="-l ${w#--}" ;; esac
		grep -q -- "$pat" "$pk/completions/$c" && pass || fail "completions/$c lacks $w"
	done
done

case_ "bash completion completes commands, subcommands and flags"
if [ -n "${BASH_VERSION:-}" ]; then
	comp() {
		bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _stigmer; echo "${COMPREPLY[*]}"' \
			_ "$pk/completions/stigmer.bash" "$@"
	}
	expect_in "$(comp stigmer da)" "daemon"
	expect_in "$(comp stigmer --home /tmp daemon in)" "install-service"
	expect_eq "$(comp stigmer daemon install-service --d)" "--dry-run" "install-service flags"
	expect_eq "$(comp stigmer --log-level d)" "debug" "--log-level values"
	expect_in "$(comp stigmer daemon logs w)" "workflow-runner"
fi
for sh in zsh fish; do
	if command -v $sh >/dev/null; then
		f=$pk/completions/$([ $sh = zsh ] && echo _stigmer || echo stigmer.fish)
		run $sh -n "$f"
		expect_rc 0
	else
		echo "SKIP [$stg_current]: $sh is not installed: $sh completion only checked for its words"
	fi
done

# --- Homebrew ------------------------------------------------------------------------------
case_ "the Homebrew formula: ruby -c, a service block, a version test"
f=$pk/homebrew/stigmer.rb
expect_in "$(cat "$f")" "service do"
expect_in "$(cat "$f")" "test do"
expect_in "$(cat "$f")" 'stigmer version'
if command -v ruby >/dev/null; then
	run ruby -c "$f"
	expect_rc 0
else
	skip "ruby is not installed (not in third_party/deps.sh: about 26 MB installed for one syntax check); ruby -c not run"
fi

finish
