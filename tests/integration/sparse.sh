#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A dump of a target with a large, mostly empty mapping (an AddressSanitizer shadow, a heap reserved with
# MAP_NORESERVE) leaves the target's page tables about as they were, and is point in time for the pages
# the target fills in it meanwhile. Protecting such a mapping whole put a marker, and so a page table, in
# every empty page of it: a 64 GiB mapping holding 64 MiB grew the target's page tables by 128 MiB (kept
# until it exits), and an AddressSanitizer target's by gigabytes. victim-sparse sweeps 48 pages spread
# over 64 GiB, filling them one by one for the first time and emptying them again (MADV_DONTNEED), all
# through each dump; each image is checked against the victim's record, the target's page tables
# (VmPTE) must grow by less than PTE_GROWTH_MAX, with and without the prepare phase.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

# 48 slots, each at most 32 MiB protected around it (16 page tables): 3 MiB; the rest is slack.
PTE_GROWTH_MAX_KB=$((16 * 1024))

vm_pte_kb() { awk '/^VmPTE:/ { print $2 }' "/proc/$1/status"; }

VICTIM_NICE=10 victim_start victim-sparse
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
pte0=$(vm_pte_kb "$VPID")

n=0
for variant in prepare prepare prepare prepare prepare prepare no-prepare no-prepare; do
        n=$((n + 1))
        image=$TEST_TMP/$n.img out=$TEST_TMP/$n.out
        before=$(vm_pte_kb "$VPID")
        if [[ $variant == no-prepare ]]; then
                LIVESNAP_NO_PREPARE=1 dump "$VPID" "$image"
        else
                dump "$VPID" "$image"
        fi
        after=$(vm_pte_kb "$VPID")
        log "$variant: the target's page tables $before kB before the dump, $after kB after"
        ((after - before < PTE_GROWTH_MAX_KB)) ||
                die "$variant: the dump grew the target's page tables by $((after - before)) kB (at most $PTE_GROWTH_MAX_KB): it protected the empty 64 GiB"
        (($(json_field "$image.json" pages_unsaved) == 0)) ||
                die "$variant: pages_unsaved=$(json_field "$image.json" pages_unsaved)"
        verify_ok "$image"
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out"
        victim_check victim-sparse "$out"
        assert_victim_ok "$VPID" "$VDIR"
        rm -rf "$out" "$image"
done
total=$(($(vm_pte_kb "$VPID") - pte0))
((total < 2 * PTE_GROWTH_MAX_KB)) || die "eight dumps grew the target's page tables by $total kB"
log "eight dumps: page tables $pte0 kB before, +$total kB after; every image consistent"
