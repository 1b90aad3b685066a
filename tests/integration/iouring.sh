#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# io_uring fixed buffers: victim-iouring keeps READ_FIXED-ing generation-stamped payloads into a
# registered (long-term pinned) buffer. The kernel writes such pages without a uffd-wp fault, so the
# engine must find them (hazards_pinned_ranges) and copy them while the target is stopped. Checks:
#   - the dump succeeds and the victim is unharmed;
#   - `info --json` reports the buffer as pinned: .meta.pinned is a list of {start, end, reason}
#     (addresses as numbers or "0x..." strings) and one entry covers the buffer, its reason naming
#     io_uring;
#   - `livesnap cat` of the buffer agrees with the control page saved at the same instant.
# Then two more dumps of a victim whose reads are all done by an io-wq worker thread (--async 1).
# A first dump with the victim stopped (SIGSTOP) is the control: that image is point-in-time whatever
# the engine does, and the check must accept it.
# An image without .meta.pinned (an engine that does not look for pinned ranges) fails the test; the
# consistency check is then expected to fail too (the buffer is copied after the freeze).
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

rc=0
probe=$("$VICTIMS/victim-iouring" --probe 2>&1) || rc=$?
((rc == 0)) || skip "${probe:-victim-iouring --probe exited $rc}"

VICTIM_NICE=5 victim_start victim-iouring
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
BUF_ADDR=$(layout_get "$VDIR" buffer addr)
BUF_LEN=$(layout_get "$VDIR" buffer len)
log "buffer at $BUF_ADDR ($BUF_LEN bytes)"

engine_reports_pinned=1
inconsistent=0

# dump_and_check LABEL [DUMP OPTIONS...]
dump_and_check() {
        local label=$1 image="$TEST_TMP/$1.img" out="$TEST_TMP/$1.out" rc=0
        shift
        log "--- $label: dump $*"
        dump "$VPID" "$image" "$@"
        verify_ok "$image"
        assert_victim_ok "$VPID" "$VDIR"

        "$LIVESNAP" info "$image" --json >"$image.info" || die "livesnap info --json exited $?"
        if ! jq -e '.meta | has("pinned")' "$image.info" >/dev/null; then
                engine_reports_pinned=0
        else
                jqf "$image.info" '.meta.pinned | type == "array"' >/dev/null ||
                        die "$label: info --json .meta.pinned is not a list: $(jq -c .meta.pinned "$image.info")"
                jqf "$image.info" '($a | num) as $s | ($s + ($l | tonumber)) as $e |
                        any(.meta.pinned[]; (.start | num) <= $s and (.end | num) >= $e and
                                (.reason | test("io_uring")))' \
                        --arg a "$BUF_ADDR" --arg l "$BUF_LEN" >/dev/null ||
                        die "$label: info --json does not report the io_uring buffer $BUF_ADDR (+$BUF_LEN) as pinned: $(jq -c .meta.pinned "$image.info")"
                jqf "$image.info" 'all(.meta.pinned[]; ((.start | num) % 4096 == 0) and ((.end | num) % 4096 == 0) and
                        ((.start | num) < (.end | num)))' >/dev/null ||
                        die "$label: pinned ranges not page aligned or empty: $(jq -c .meta.pinned "$image.info")"
                log "$label: pinned: $(jq -c .meta.pinned "$image.info")"
        fi

        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out"
        "$VICTIMS/victim-iouring" --check "$out" >"$out/check.out" 2>&1 || rc=$?
        cat "$out/check.out" >&2
        if ((rc != 0)); then
                inconsistent=$((inconsistent + 1))
                if ((engine_reports_pinned)) || [[ -n ${IOURING_FORCE_CHECK:-} ]]; then
                        die "$label: the saved buffer is not the one of the snapshot instant: $(grep 'CHECK FAILED' "$out/check.out" || tail -n 1 "$out/check.out")"
                fi
                log "$label: inconsistent, as expected without pinned-range handling"
        fi
        rm -rf "$out" "$image"
}

# Control: with the victim stopped (SIGSTOP) for the whole dump, nothing writes the buffer after the
# instant, so the image is point-in-time whatever the engine does: the check must accept it.
kill -STOP "$VPID"
wait_until 5 "victim $VPID to stop" bash -c "[[ \$(awk '{print \$3}' /proc/$VPID/stat) == T ]]"
log "--- stopped: dump with the victim stopped"
dump "$VPID" "$TEST_TMP/stopped.img"
kill -CONT "$VPID"
mkdir "$TEST_TMP/stopped.out"
cp "$VDIR/layout" "$TEST_TMP/stopped.out/"
cat_layout "$TEST_TMP/stopped.img" "$TEST_TMP/stopped.out"
victim_check victim-iouring "$TEST_TMP/stopped.out"
rm -rf "$TEST_TMP/stopped.out" "$TEST_TMP/stopped.img"
assert_victim_ok "$VPID" "$VDIR"

dump_and_check plain-1
dump_and_check plain-2
# Slow copying: without handling, the buffer is copied long after the freeze.
dump_and_check rate --rate 16M
assert_victim_ok "$VPID" "$VDIR"

# The same with every read forced to an io-wq worker thread of the target (IOSQE_ASYNC): a kernel-side
# thread the engine must cope with, and reads that can be in flight at the freeze.
kill_wait "$VPID"
VICTIM_NICE=5 victim_start victim-iouring --async 1
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
BUF_ADDR=$(layout_get "$VDIR" buffer addr)
BUF_LEN=$(layout_get "$VDIR" buffer len)
wait_until 5 "an io-wq worker thread in the victim" bash -c "grep -qs '^iou-wrk' /proc/$VPID/task/*/comm"
dump_and_check async-1
dump_and_check async-rate --rate 16M
assert_victim_ok "$VPID" "$VDIR"

if ((!engine_reports_pinned)); then
        die "the images do not report pinned ranges (.meta.pinned); the buffer was inconsistent in $inconsistent of 5 dumps"
fi
log "all dumps consistent"
