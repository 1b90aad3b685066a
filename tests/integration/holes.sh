#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A dump leaves the target's empty pages empty. Protecting with WP_UNPOPULATED puts a PTE marker in
# every empty page, which PAGEMAP_SCAN reports as swapped; taken for data, the first dump of a target
# read all its empty pages (as zeros) and so mapped the zero page into every one of them. A target with
# a 64 MiB private mapping, one page in sixteen written: its pages present (/proc/PID/pagemap) must be
# the same after each dump as before, the dump must read none of the holes as zero pages, and the image
# must hold the written pages and read zeros in the holes. With and without the prepare phase.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq python3 cmp

# The target: prints the mapping's address, then sleeps. Page i*16 holds the byte (i % 251) + 1.
cat >"$TEST_TMP/target.py" <<'PY'
import mmap, ctypes, sys, time
size = 64 << 20
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(size // 4096 // 16):
    m[i * 16 * 4096] = (i % 251) + 1
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % addr)
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1)
PY

bg_start python3 "$TEST_TMP/target.py" "$TEST_TMP/addr"
TPID=$BG_PID
wait_for_file "$TEST_TMP/addr" 10 "$TPID"
ADDR=$(cat "$TEST_TMP/addr")
before=$(pages_present "$TPID" "$ADDR" 16384)
((before == 1024)) || die "the target has $before pages present, expected 1024"

for variant in prepare no-prepare; do
        image=$TEST_TMP/$variant.lsnap
        if [[ $variant == no-prepare ]]; then
                LIVESNAP_NO_PREPARE=1 dump "$TPID" "$image"
        else
                dump "$TPID" "$image"
        fi
        after=$(pages_present "$TPID" "$ADDR" 16384)
        ((after == before)) || die "$variant: the dump made $((after - before)) empty pages present (of 15360)"
        zero=$(json_field "$image.json" pages_zero)
        ((zero < 1000)) || die "$variant: the dump read $zero zero pages: it read the holes"
        # A written page and the hole after it, from the image.
        for i in 0 7 1023; do
                a=$((ADDR + i * 16 * 4096))
                "$LIVESNAP" cat "$image" "$a" 1 >"$TEST_TMP/byte" || die "$variant: cat of page $((i * 16)) failed"
                want=$(printf '%02x' $(((i % 251) + 1)))
                got=$(od -An -tx1 "$TEST_TMP/byte" | tr -d ' \n')
                [[ $got == "$want" ]] || die "$variant: page $((i * 16)) starts with $got in the image, expected $want"
                "$LIVESNAP" cat "$image" $((a + 4096)) 4096 >"$TEST_TMP/hole" || die "$variant: cat of a hole failed"
                cmp -s "$TEST_TMP/hole" <(head -c 4096 /dev/zero) || die "$variant: the hole after page $((i * 16)) is not zero"
        done
        log "$variant: $after pages present after the dump as before, $zero zero pages read; pages and holes as written"
done
