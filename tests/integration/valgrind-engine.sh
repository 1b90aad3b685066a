#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# timeout: 300
# valgrind (memcheck) over the engine: `livesnap dump` of a busy victim-sweep (the engine, lib/, runs in
# the CLI process and in the short-lived injector child it forks). Any memcheck error, or a definite or
# indirect leak, fails the test; the image must hold the victim's invariant.
#
# Skips, and says why, where valgrind cannot run the engine at all: valgrind 3.19 (Debian 12) has no
# wrapper for pidfd_open (syscall 434) or pidfd_getfd (438) and fails them with ENOSYS, and the engine
# needs both: lib/ptrace.c turns the target's PID into a pidfd before it seizes anything, and
# lib/snapshot.c takes the userfaultfd the target created with pidfd_getfd. There is no valgrind option
# to pass an unknown syscall through, and a fallback to bare PIDs in the engine would test another
# engine, so until valgrind implements them the engine's leaks are LeakSanitizer's to find
# (asan-victims: the victim tests with the ASan/LSan build of the CLI) and valgrind covers the readers
# (valgrind.sh). Once it runs: memcheck has no model of UFFDIO_* or PAGEMAP_SCAN and goes by the
# ioctl numbers' size and direction bits, so PAGEMAP_SCAN's output array (reached through a pointer in
# its argument) may be reported as uninitialised; that would need a suppression naming it.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
command -v valgrind >/dev/null || skip "valgrind is not installed (scripts/install-deps.sh installs it)"
require_cmd jq

syscall_name() {
        case $1 in
        323) echo userfaultfd ;;
        434) echo pidfd_open ;;
        438) echo pidfd_getfd ;;
        *) echo "?" ;;
        esac
}

VICTIM_NICE=10 victim_start victim-sweep --region-kib 1024
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
IMAGE=$TEST_TMP/engine.lsnap
LOG=$TEST_TMP/vg-dump.log
VG_ERR=99

rc=0
valgrind --tool=memcheck --error-exitcode=$VG_ERR --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --log-file="$LOG" \
        "$LIVESNAP" dump "$VPID" -o "$IMAGE" --json --no-progress >"$TEST_TMP/dump.json" 2>"$TEST_TMP/dump.err" || rc=$?
assert_victim_ok "$VPID" "$VDIR"
mapfile -t missing < <(grep -oE 'unhandled [a-z0-9]+-linux syscall: [0-9]+' "$LOG" | awk '{ print $NF }' | sort -un)
if ((${#missing[@]} > 0)); then
        # The engine stops at the first: ask valgrind about the other pidfd call it needs too.
        if command -v perl >/dev/null; then
                for n in 434 438; do
                        valgrind --log-file="$TEST_TMP/probe-$n.log" perl -e "syscall($n, -1, 0, 0)" || true
                        grep -q "unhandled [a-z0-9]*-linux syscall: $n\b" "$TEST_TMP/probe-$n.log" && missing+=("$n")
                done
                mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -un)
        fi
        what=
        for n in "${missing[@]}"; do what+="${what:+, }$n ($(syscall_name "$n"))"; done
        log "livesnap dump under valgrind exited $rc: $(cat "$TEST_TMP/dump.err")"
        skip "$(valgrind --version) cannot run the engine: it does not implement syscall(s) $what, which the engine needs (lib/ptrace.c, lib/snapshot.c); LeakSanitizer checks the engine in asan-victims"
fi
if ((rc == VG_ERR)) || grep -q "ERROR SUMMARY: [1-9]" "$LOG"; then
        sed 's/^/    /' "$LOG" | tail -n 120 >&2
        die "valgrind found errors or leaks in the engine (above)"
fi
((rc == 0)) || die "livesnap dump under valgrind exited $rc: $(cat "$TEST_TMP/dump.err")"
log "dump under valgrind: $(jq -c '{freeze_us, elapsed_ms, pages_saved, pages_faulted}' "$TEST_TMP/dump.json"); $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$LOG" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"

out=$TEST_TMP/check
mkdir "$out"
cp "$VDIR/layout" "$out/"
cat_layout "$IMAGE" "$out"
victim_check victim-sweep "$out"
log "the engine runs clean under valgrind, and its image is point-in-time"
