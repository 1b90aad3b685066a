#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A thread exits holding a robust mutex in the middle of a dump. The kernel's exit-time writes
# (clear_child_tid, which pthread_join() waits on, and FUTEX_OWNER_DIED on held robust mutexes) are
# silently dropped on a page that is still write-protected; the engine must save and un-protect those
# pages before the thread exits. Then pthread_join() returns and the next lock gets EOWNERDEAD;
# otherwise the victim hangs forever.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

victim_start victim-robust
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
IMAGE=$TEST_TMP/robust.img

# ~200 MiB at 48 MiB/s: the copy lasts about 4 s; the mutex sits in the middle of the ballast.
# The dump stops itself on entering the copy phase (after the freeze), so that the thread exits after
# the instant whatever the machine's load: waiting for the victim to run again was not enough, since it
# also runs between the attach and the freeze, which under load took more than the 0.3 s allowed.
LIVESNAP_TEST_STOP_AT=copying "$LIVESNAP" dump "$VPID" -o "$IMAGE" --json --rate 48M >"$IMAGE.json" 2>"$IMAGE.err" &
DPID=$!
cleanup_add "$DPID"
wait_until 30 "the dump to reach the copy phase" dump_stopped "$DPID" "$IMAGE.err"
kill -CONT "$DPID"

# Wait until the victim runs again under the dump (the copy phase): attached, and beating.
dumping() {
        kill -0 "$DPID" 2>/dev/null || die "the dump ended before the test could trigger the thread exit: $(cat "$IMAGE.err")"
}
attached() {
        dumping
        [[ $(awk '/^TracerPid:/ {print $2}' /proc/"$VPID"/status) != 0 ]]
}
wait_until 20 "livesnap to attach to the victim" attached
beats0=$(read_counters "$VPID" "$VDIR")
resumed() {
        dumping
        (($(read_counters "$VPID" "$VDIR") > beats0 + 10))
}
wait_until 20 "the victim to run again during the dump" resumed
sleep 0.3
kill -0 "$DPID" 2>/dev/null || die "the dump finished before the trigger (too fast: is --rate honoured?); cannot test thread exit during a dump"

log "dump running; making the holder thread exit"
kill -USR1 "$VPID"
t0=$SECONDS
if ! file_appears "$VDIR/joined" 10; then
        [[ -e $VDIR/error ]] && die "victim error: $(cat "$VDIR/error")"
        die "pthread_join() did not return within 10 s after a thread exited during the dump: the kernel's clear_child_tid write was lost (its page was still write-protected when the thread exited); thread states: $(thread_states "$VPID" | tr '\n' ' ')"
fi
if ! file_appears "$VDIR/result" 10; then
        [[ -e $VDIR/error ]] && die "victim error: $(cat "$VDIR/error")"
        die "pthread_mutex_lock() of the robust mutex held by the exited thread hangs: the kernel's FUTEX_OWNER_DIED write was lost (the mutex page was still write-protected at thread exit)"
fi
result=$(cat "$VDIR/result")
[[ $result == EOWNERDEAD ]] || die "pthread_mutex_lock() after the owner exited returned $result, expected EOWNERDEAD"
still_dumping=no
kill -0 "$DPID" 2>/dev/null && still_dumping=yes
log "joined and EOWNERDEAD within $((SECONDS - t0)) s (dump still running: $still_dumping)"

rc=0
wait "$DPID" || rc=$?
((rc == 0)) || die "livesnap dump exited $rc: $(cat "$IMAGE.err")"
log "dump: $(jq -c . "$IMAGE.json")"
threads=$(json_field "$IMAGE.json" threads)
((threads == 3)) || die "dump reports $threads threads at the instant, expected 3 (main, heartbeat, holder)"
verify_ok "$IMAGE"

# The image shows the instant, before the exit: the mutex held by the holder.
out=$TEST_TMP/check
mkdir "$out"
cp "$VDIR/layout" "$out/"
cat_layout "$IMAGE" "$out" control progress mutex_page ballast_head ballast_below_mutex ballast_above_mutex ballast_tail
victim_check victim-robust "$out"

assert_victim_ok "$VPID" "$VDIR"
