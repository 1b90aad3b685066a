#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The victim's main thread is blocked in read() on a pipe into write-protected memory when the dump
# starts, and keeps reading a paced stream during it. The read must be restarted transparently after
# the freeze (no EINTR), copy_to_user into protected pages must wait for the save (no EFAULT), and no
# byte may be lost or corrupted; the victim checks every byte itself. The image's ring buffer must
# hold exactly the stream bytes its records say at the instant.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

victim_start victim-pipe
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR

main_in_read() { [[ $(cat /proc/"$VPID"/syscall 2>/dev/null) == "0 "* ]]; }

for round in 1 2 3; do
        IMAGE=$TEST_TMP/pipe-$round.img
        # Start when the main thread is inside read() (it is, nearly always).
        wait_until 10 "the victim's main thread to block in read()" main_in_read
        before=$(read_counters "$VPID" "$VDIR")
        # ~70 MiB at 32 MiB/s: about 2 s during which the main thread reads ~16 MiB into the ring.
        dump "$VPID" "$IMAGE" --rate 32M
        after=$(read_counters "$VPID" "$VDIR")
        log "round $round: received $before bytes before the dump, $after after"
        [[ ! -e $VDIR/error ]] || die "the victim failed during the dump: $(cat "$VDIR/error")"
        ((after > before)) || die "the victim received nothing during the dump ($before -> $after bytes)"
        assert_victim_ok "$VPID" "$VDIR"
        # (How many of those reads hit a still-protected page depends on where the copier was.)
        log "round $round: $(json_field "$IMAGE.json" faults) write faults served"
        verify_ok "$IMAGE"

        out=$TEST_TMP/check-$round
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$IMAGE" "$out"
        victim_check victim-pipe "$out"
        rm -rf "$out" "$IMAGE"
done

# And it goes on reading correctly afterwards.
sleep 0.5
assert_victim_ok "$VPID" "$VDIR"
