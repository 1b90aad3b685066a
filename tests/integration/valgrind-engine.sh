#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# timeout: 300
# valgrind (memcheck) over the engine: `livesnap dump` of a busy victim-sweep (the engine, lib/, runs in
# the CLI process and in the short-lived injector child it forks). Any memcheck error, or a definite or
# indirect leak, in either process fails the test; the image must hold the victim's invariant.
#
# valgrind 3.19 (Debian 12) has no wrapper for pidfd_open (syscall 434) or pidfd_getfd (438) and fails
# them with ENOSYS, so there the engine runs on its fallbacks (see the notes atop lib/ptrace.c and
# lib/snapshot.c): without a pidfd, an exit is told from an exec through /proc; without pidfd_getfd, the
# injector has the target send the userfaultfd as SCM_RIGHTS to an abstract AF_UNIX socket of the
# engine's, which checks the sender's credentials and the fd's kind. A valgrind that implements them
# runs the ordinary path. No suppressions: memcheck has no model of UFFDIO_* or PAGEMAP_SCAN and goes by
# the ioctl numbers' size and direction bits, so the engine zeroes what those ioctls fill beyond their
# argument (PAGEMAP_SCAN's region array, reached through a pointer) rather than have it reported.
# Skips, saying why, if valgrind is not installed.
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
what=
for n in "${missing[@]}"; do what+="${what:+, }$n ($(syscall_name "$n"))"; done
if ((rc == VG_ERR)) || grep -q "ERROR SUMMARY: [1-9]" "$LOG"; then
        sed 's/^/    /' "$LOG" | tail -n 120 >&2
        die "valgrind found errors or leaks in the engine (above)"
fi
((rc == 0)) || die "livesnap dump under valgrind exited $rc: $(cat "$TEST_TMP/dump.err")${what:+ (valgrind lacks syscall(s) $what)}"
grep -q "ERROR SUMMARY: 0 errors" "$LOG" || die "valgrind's log has no error summary: $(tail -n 5 "$LOG")"
if [[ -n $what ]]; then
        log "$(valgrind --version) lacks syscall(s) $what: the engine ran on its fallbacks"
fi
log "dump under valgrind: $(jq -c '{freeze_us, elapsed_ms, pages_saved, pages_faulted}' "$TEST_TMP/dump.json"); $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$LOG" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"

out=$TEST_TMP/check
mkdir "$out"
cp "$VDIR/layout" "$out/"
cat_layout "$IMAGE" "$out"
victim_check victim-sweep "$out"
log "the engine runs clean under valgrind, and its image is point-in-time"
