#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Point-in-time consistency of a private file mapping written for the first time between the prepare
# phase and the freeze. The prepare phase protects such a mapping whole while it holds none of its own
# pages ("watched"), and the freeze then copies only what was written since; here the victim starts
# writing it during a pause the test puts before the freeze (LIVESNAP_TEST_PREPARED_PAUSE_MS), and the
# image must hold those pages as at the instant, the others being the file's. A second dump, taken while
# the mapping's pages are all its own, takes the path of tracked mappings; a third, of a new victim that
# maps its file again over the watched mapping before writing it, reads the new mapping as all written.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

victim_start victim-privfile
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR

# cat_privfile IMAGE OUT: the privfile region, page by page: from the image, or from the file where
# the image says the file holds the page.
cat_privfile() {
        local image=$1 out=$2 addr len a rc off
        read -r _ addr len < <(grep '^privfile ' "$VDIR/layout")
        : >"$out"
        for ((a = addr; a < addr + len; a += 4096)); do
                rc=0
                "$LIVESNAP" cat "$image" "$(printf '0x%x' "$a")" 4096 >>"$out" 2>"$TEST_TMP/cat.err" || rc=$?
                ((rc == 0)) && continue
                off=$(sed -n 's/.*file .*privfile holds it at offset \(0x[0-9a-f]*\).*/\1/p' "$TEST_TMP/cat.err")
                [[ -n $off ]] || die "livesnap cat $(printf '0x%x' "$a") exited $rc: $(cat "$TEST_TMP/cat.err")"
                dd if="$VDIR/privfile" bs=4096 skip=$((off / 4096)) count=1 status=none >>"$out"
        done
}

# check IMAGE LABEL: the image holds one cut of the sweep; prints the gen at the instant.
check() {
        local image=$1 label=$2 out="$TEST_TMP/$2.out"
        verify_ok "$image"
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out" control
        cat_privfile "$image" "$out/privfile.bin"
        victim_check victim-privfile "$out"
        assert_victim_ok "$VPID" "$VDIR"
        sed -n 's/^consistent at gen \([0-9]*\):.*/\1/p' "$out/check.out"
}

# watched_dump LABEL SIGNAL: a dump held LIVESNAP_TEST_PREPARED_PAUSE_MS before its freeze, the victim
# sent SIGNAL at the start of the pause; checks the image; sets gen to the gen at the instant.
watched_dump() {
        local label=$1 sig=$2 img=$TEST_TMP/$1.img dpid rc frozen
        LIVESNAP_DEBUG=1 LIVESNAP_TEST_PREPARED_PAUSE_MS=1000 "$LIVESNAP" dump "$VPID" -o "$img" --json \
                >"$img.json" 2>"$TEST_TMP/$label.err" &
        dpid=$!
        cleanup_add "$dpid"
        wait_until 30 "the end of the prepare phase" grep -q 'test: pausing' "$TEST_TMP/$label.err"
        kill "-$sig" "$VPID"
        rc=0
        wait "$dpid" || rc=$?
        ((rc == 0)) || die "$label: the dump exited $rc: $(grep -v 'copy:' "$TEST_TMP/$label.err" | tail -n 5)"
        grep -Eq 'private file mappings: [0-9]+ tracked, [1-9][0-9]* of them watched' "$TEST_TMP/$label.err" ||
                die "$label: no private file mapping was watched: $(grep 'private file mappings' "$TEST_TMP/$label.err")"
        frozen=$(json_field "$img.json" private_pages_frozen)
        ((frozen >= 256)) ||
                die "$label: private_pages_frozen=$frozen: the 256 pages written before the instant were not all copied in the freeze"
        gen=$(check "$img" "$label")
        ((gen >= 1)) || die "$label: the image shows no sweep (gen $gen): the victim wrote nothing before the instant"
        log "$label: one cut at gen $gen, $frozen private pages copied in the freeze"
}

watched_dump watched USR1

# The mapping's pages are all private now: tracked, held from the prepare phase or read in the freeze.
img=$TEST_TMP/tracked.img
"$LIVESNAP" dump "$VPID" -o "$img" --json >"$img.json" 2>"$TEST_TMP/tracked.err" ||
        die "the second dump exited $?: $(cat "$TEST_TMP/tracked.err")"
gen2=$(check "$img" tracked)
((gen2 > gen)) || die "the second image's gen $gen2 is not past the first's $gen"
log "tracked: one cut at gen $gen2; early copies that stood: $(json_field "$img.json" private_pages_early)"

# The same, but the victim first maps the file again over the watched mapping (same range, file and
# offset: a mapping the dump's userfaultfds do not know), then writes it: read as all written.
kill_wait "$VPID"
victim_start victim-privfile
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
watched_dump replaced USR2
