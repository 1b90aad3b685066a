#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# livesnapd's own sandbox, through the very function the daemon calls once it serves:
# `livesnapd --check-sandbox` enters it and tries system calls its allow-list leaves out (fork, execve,
# ptrace, an AF_INET socket, unshare), each of which works or fails otherwise without the filter; all
# must be refused with EPERM while an allowed one (getppid) still works, and the process must be left
# with only CAP_CHOWN and CAP_FOWNER. As root and as an unprivileged user. bus.sh checks the same of a
# running daemon's bus-facing process, and that its spawner and workers stay unfiltered.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_root
require_cmd setpriv
LIVESNAPD=${LIVESNAPD:-$BUILD/livesnapd}
[[ -x $LIVESNAPD ]] || die "$LIVESNAPD not built"
grep -q '^Seccomp:' /proc/self/status || skip "kernel without seccomp (no Seccomp: in /proc/self/status)"

# check_sandbox CAPS CMD...: CMD (livesnapd --check-sandbox, perhaps under setpriv) passes and reports
# every call left out refused with EPERM, getppid allowed, and CapEff/CapPrm/CapBnd/CapAmb as expected.
check_sandbox() {
	local caps=$1 out=$TEST_TMP/check.out call
	shift
	"$@" >"$out" 2>"$TEST_TMP/check.err" || die "'$*' failed: $(cat "$out" "$TEST_TMP/check.err")"
	for call in 'fork()' 'execve()' 'ptrace(PTRACE_PEEKDATA)' 'socket(AF_INET)' 'unshare(0)'; do
		grep -qF "$call" "$out" || die "'$*' did not try $call: $(cat "$out")"
		grep -F "$call" "$out" | grep -q "refused: Operation not permitted" ||
			die "$call was not refused with EPERM: $(grep -F "$call" "$out")"
	done
	grep -q '^getppid() *allowed$' "$out" || die "an allowed call was refused: $(cat "$out")"
	grep -q "^Seccomp:[[:space:]]*2$" "$out" || die "no seccomp filter: $(cat "$out")"
	grep -q "^NoNewPrivs:[[:space:]]*1$" "$out" || die "no_new_privs is not set: $(cat "$out")"
	grep -q "^CapEff:[[:space:]]*$caps$" "$out" || die "CapEff is not $caps: $(grep ^Cap "$out")"
	grep -q "^CapPrm:[[:space:]]*$caps$" "$out" || die "CapPrm is not $caps: $(grep ^Cap "$out")"
	grep -q "^CapAmb:[[:space:]]*0000000000000000$" "$out" || die "ambient capabilities left: $(grep ^Cap "$out")"
}

# Root: CAP_CHOWN and CAP_FOWNER kept, every other capability gone from the bounding set too.
check_sandbox 0000000000000009 "$LIVESNAPD" --check-sandbox
grep -q "^CapBnd:[[:space:]]*0000000000000009$" "$TEST_TMP/check.out" ||
	die "the bounding set still holds more: $(grep ^CapBnd "$TEST_TMP/check.out")"
log "as root: fork, execve, ptrace, socket and unshare refused with EPERM; CAP_CHOWN and CAP_FOWNER kept"

# An unprivileged user: the filter needs no privilege (no_new_privs), and there is nothing to keep.
check_sandbox 0000000000000000 setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
	"$LIVESNAPD" --check-sandbox
log "as nobody: the same calls refused"
