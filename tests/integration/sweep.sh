#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Point-in-time consistency: dump victim-sweep (7 threads sweeping generation numbers over anonymous,
# THP, memfd, thread-arena, brk, .bss and .data memory) while it runs, extract every region with
# `livesnap cat`, and check that each shows exactly one cut between two consecutive sweeps of its
# thread, consistent with the control page saved at the same instant.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

# At nice 10 the seven sweepers still write whenever a CPU is free, but livesnap, cat and the checks
# are not starved on this 2-CPU machine.
VICTIM_NICE=10 victim_start victim-sweep
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR

# dump_and_check LABEL [DUMP OPTIONS...]
dump_and_check() {
        local label=$1 image="$TEST_TMP/$1.img" out="$TEST_TMP/$1.out"
        shift
        log "--- $label: dump $*"
        dump "$VPID" "$image" "$@"
        [[ $(json_field "$image.json" threads) == 7 ]] ||
                die "$label: dump reports $(json_field "$image.json" threads) threads, expected 7"
        (($(json_field "$image.json" pages_discarded) == 0)) ||
                die "$label: pages_discarded=$(json_field "$image.json" pages_discarded), but the victim unmaps nothing"
        (($(json_field "$image.json" pages_unsaved) == 0)) ||
                die "$label: pages_unsaved=$(json_field "$image.json" pages_unsaved): some memory was not saved"
        verify_ok "$image"
        [[ -z ${INFO:-} ]] || check_info "$image"
        if [[ -n ${LIVESNAP_INDEX_MEMORY:-} ]]; then
                # More index entries (the trailer's count) than the writer held in memory: it spilled.
                local entries
                entries=$(index_entries "$image")
                ((entries > LIVESNAP_INDEX_MEMORY / 16)) ||
                        die "$label: $entries index entries, no more than $LIVESNAP_INDEX_MEMORY bytes hold: nothing spilled"
                log "$label: $entries index entries, $((LIVESNAP_INDEX_MEMORY / 16)) at most in memory at once"
        fi

        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out"
        victim_check victim-sweep "$out"
        assert_victim_ok "$VPID" "$VDIR"
        rm -rf "$out" "$image"
}

# The JSON result and `info --json` describe the same image.
check_info() {
        local image=$1
        "$LIVESNAP" info "$image" --json >"$image.info" || die "livesnap info --json exited $?"
        jq -e '.threads | length == 7' "$image.info" >/dev/null ||
                die "info --json: threads is not a list of 7: $(jq -c .threads "$image.info")"
        jq -e '[.threads[] | select(.main)] | length == 1' "$image.info" >/dev/null ||
                die "info --json: not exactly one main thread"
        jq -e --argjson pid "$VPID" '[.threads[] | select(.main)][0].tid == $pid' "$image.info" >/dev/null ||
                die "info --json: the main thread is not TID $VPID"
        jq -e '.holes | length == 0' "$image.info" >/dev/null ||
                die "info --json: unexpected holes $(jq -c .holes "$image.info")"
        local saved stored
        saved=$(json_field "$image.json" pages_saved)
        stored=$(jq -er '.pages_stored' "$image.info")
        ((saved == stored)) || die "dump says pages_saved=$saved, info says pages_stored=$stored"
        # Every region is covered by the image's mappings (.bss spans two).
        local n a l
        while read -r n a l; do
                jqf "$image.info" '($a | num) as $s | ($s + ($l | tonumber)) as $e |
                        [.mappings[] | {s: (.start | num), e: (.end | num)} | select(.e > $s and .s < $e)] |
                        sort_by(.s) |
                        reduce .[] as $m ($s; if . < $e and $m.s <= . then ([., $m.e] | max) else . end) >= $e' \
                        --arg a "$a" --arg l "$l" >/dev/null || die "info --json: the mappings do not cover '$n' ($a, $l bytes)"
        done <"$VDIR/layout"
}

# uffd_wp_vmas PID: how many of PID's mappings are registered for uffd-wp (VmFlags "uw")
uffd_wp_vmas() { grep -c '^VmFlags:.* uw' /proc/"$1"/smaps || true; }

# stopped_itself PID LOG: true once PID is stopped; dies if it exited instead
stopped_itself() {
        local st
        st=$(awk '/^State:/ {print $2}' /proc/"$1"/status 2>/dev/null || true)
        [[ -n $st && $st != Z ]] || die "livesnap dump exited instead of stopping: $(tail -3 "$2")"
        [[ $st == T ]]
}

# The memory is given back before the finish: held at the start of 'finishing', the victim has no
# mapping left registered (release_saved() unregistered them all, in slices, none refused), while at
# 'copying' it had some. Then the dump goes on and its image is checked as usual.
release_check() {
        local image=$TEST_TMP/release.img dpid n out=$TEST_TMP/release
        for phase in copying finishing; do
                LIVESNAP_DEBUG=1 LIVESNAP_TEST_STOP_AT=$phase "$LIVESNAP" dump "$VPID" -o "$image" --json \
                        --no-progress >"$image.json" 2>"$image.err" &
                dpid=$!
                cleanup_add "$dpid"
                wait_until 60 "livesnap to stop itself at '$phase'" stopped_itself "$dpid" "$image.err"
                n=$(uffd_wp_vmas "$VPID")
                log "release: at '$phase' $n mapping(s) of the victim registered for uffd-wp"
                if [[ $phase == copying ]]; then
                        ((n > 0)) || die "release: no mapping registered for uffd-wp at 'copying': the check sees nothing"
                else
                        ((n == 0)) || die "release: $n mapping(s) still registered at 'finishing': $(grep -B30 '^VmFlags:.* uw' /proc/"$VPID"/smaps | grep -E '^[0-9a-f]+-' | head -5)"
                fi
                kill -CONT "$dpid"
                wait "$dpid" || die "release: livesnap dump exited $?: $(tail -3 "$image.err")"
        done
        grep -q 'released [0-9]* MiB in [0-9]* slices (0 refused' "$image.err" ||
                die "release: no clean release in the debug output: $(grep released "$image.err" || echo none)"
        verify_ok "$image"
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out"
        victim_check victim-sweep "$out"
        assert_victim_ok "$VPID" "$VDIR"
        rm -rf "$out" "$image"*
}

INFO=1 dump_and_check plain-1
dump_and_check plain-2
release_check
# Protections changed from any CPU (the engine's default moves that work to the target's CPU).
LIVESNAP_NO_FOLLOW=1 dump_and_check no-follow
# The writer's index spilled to disk in runs of 16 entries and merged at the end.
LIVESNAP_INDEX_MEMORY=256 dump_and_check spilled-index
# Rate-limited: the background copier is slow, so the sweepers fault on most of their pages.
dump_and_check plain-3-rate --rate 32M
dump_and_check compress --compress=9 --rate 64M
# A buffer much smaller than what the sweepers dirty: their faults wait for the writer.
dump_and_check tiny-buffer --buffer 1M

# Private file mappings (.data) are tracked by an async uffd from the prepare phase: pages copied
# early stand if the target did not write them since. A victim that rests 300 ms between sweeps is
# mostly at rest at the instant, so its 1 MiB .data region's early copies stand, and must still read
# as one cut; LIVESNAP_NO_ASYNC copies them all inside the freeze instead.
kill_wait "$VPID"
VICTIM_NICE=10 victim_start victim-sweep --pause-us 300000 --region-kib 1024
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
best=0
for i in 1 2 3; do
        dump_and_check "resting-$i" --no-progress
        early=$(json_field "$TEST_TMP/resting-$i.img.json" private_pages_early)
        log "resting-$i: private_pages_early=$early, private_pages_frozen=$(json_field "$TEST_TMP/resting-$i.img.json" private_pages_frozen)"
        ((early > best)) && best=$early
done
((best >= 256)) || die "no dump kept the early copy of the resting victim's 256 .data pages (best: $best pages)"
LIVESNAP_NO_ASYNC=1 dump_and_check resting-noasync
early=$(json_field "$TEST_TMP/resting-noasync.img.json" private_pages_early)
((early == 0)) || die "LIVESNAP_NO_ASYNC=1: private_pages_early=$early, expected 0"
log "all dumps consistent"
