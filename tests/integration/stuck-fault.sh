#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A target with a thread waiting for good in a kernel-mode page fault on its own userfaultfd (a read()
# into a page its uffd never fills) cannot be frozen: interrupted, such a thread does not stop until the
# fault is served. livesnap waited for it without end, with the target's other threads stopped, and
# ignored SIGTERM meanwhile. The dump must now fail, saying which thread did not stop, and leave the
# rest of the target running, untraced and making progress; no image is left behind.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_build

victim_start victim-stuckfault
VPID=$VICTIM_PID
# The reader thread is the one not named by the PID; wait until it sits in its fault.
stuck_thread_waiting() {
        local t
        for t in /proc/"$VPID"/task/*; do
                [[ ${t##*/} != "$VPID" ]] && [[ $(cat "$t/wchan" 2>/dev/null) == *userfault* ]] && return 0
        done
        return 1
}
wait_until 10 "the victim's reader to wait in its fault" stuck_thread_waiting

rc=0
"$LIVESNAP" dump "$VPID" -o "$TEST_TMP/image" --json >"$TEST_TMP/out.json" 2>"$TEST_TMP/err" || rc=$?
((rc != 0)) || die "livesnap dump of a victim that cannot be frozen succeeded: $(cat "$TEST_TMP/out.json")"
grep -q 'did not stop within' "$TEST_TMP/err" ||
        die "livesnap dump failed (exit $rc) without naming the thread that did not stop: $(cat "$TEST_TMP/err")"
log "dump failed as it should: $(head -n 1 "$TEST_TMP/err")"
[[ ! -e $TEST_TMP/image ]] || die "the failed dump left $TEST_TMP/image behind"
[[ -z $(find "$TEST_TMP" -maxdepth 1 -name 'image*' -print -quit) ]] || die "the failed dump left a temporary file"

# The main thread runs on, untraced; the reader is still in its own fault (as before the dump).
assert_alive "$VPID"
assert_not_traced "$VPID"
[[ $(proc_state "$VPID") != t && $(proc_state "$VPID") != T ]] || die "the victim's main thread is left stopped"
assert_progressing "$VPID" "$VICTIM_DIR" 0.5
log "the victim runs on, untraced, counting"
