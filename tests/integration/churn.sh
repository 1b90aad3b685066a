#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A rate-limited dump of victim-churn, which keeps unmapping, mapping, moving, growing, shrinking,
# re-protecting and madvising regions full of data and forking, throughout the dump. The dump must
# complete, the victim must be unharmed and still running, regions unmapped before the copier reached
# them must be reported discarded (in the result, in `info --json` holes, and by `cat` exiting 4), and
# every region the image does hold must hold exactly its data at the instant.
#
# The checks after the dump report every problem they find before failing.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

victim_start victim-churn
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
IMAGE=$TEST_TMP/churn.img

iterations() { read_counters "$VPID" "$VDIR"; }

before=$(iterations)
# 256 MiB of ballast at 64 MiB/s: about 4 s of copying while the pool is recycled every ~50 ms.
dump "$VPID" "$IMAGE" --rate 64M
after=$(iterations)
log "victim iterations: $before before the dump, $after after"
((after > before)) || die "the victim made no progress during the dump ($before -> $after iterations)"
assert_victim_ok "$VPID" "$VDIR"

verify_ok "$IMAGE"

# ---- the result and the holes ----

discarded=$(json_field "$IMAGE.json" pages_discarded)
((discarded > 0)) ||
        soft_fail "pages_discarded=0: the victim unmapped written regions right after the snapshot instant, before a 64 MiB/s copier could have saved them all; they must be counted as discarded"
unsaved=$(json_field "$IMAGE.json" pages_unsaved)
((unsaved == 0)) || soft_fail "pages_unsaved=$unsaved: the engine failed to save some pages"

"$LIVESNAP" info "$IMAGE" --json >"$IMAGE.info" || die "livesnap info --json exited $?"
n_discarded_holes=$(jqf "$IMAGE.info" '[.holes[] | select(.reason == "discarded")] | length' -r)
if ((n_discarded_holes == 0)); then
        soft_fail "info --json lists no discarded holes (holes: $(jq -c .holes "$IMAGE.info"))"
fi
jqf "$IMAGE.info" 'all(.holes[]; .reason == "discarded" or .reason == "unsaved")' >/dev/null ||
        soft_fail "info --json: a hole with an unknown reason: $(jq -c '[.holes[] | select(.reason != "discarded" and .reason != "unsaved")]' "$IMAGE.info")"
jqf "$IMAGE.info" '[.holes[] | (.start | num)] as $s | $s == ($s | sort)' >/dev/null ||
        soft_fail "info --json: holes are not sorted by address"
overlaps=$(jqf "$IMAGE.info" '[.holes[] | {s: (.start | num), e: (.end | num)}] | sort_by(.s) as $h |
        [range(1; $h | length) | select($h[.].s < $h[. - 1].e) | "\($h[. - 1].s | hex)-\($h[. - 1].e | hex) and \($h[.].s | hex)-\($h[.].e | hex)"] |
        "\(length) \(.[0:3] | join(", "))"' -r)
if [[ ${overlaps%% *} != 0 ]]; then
        soft_fail "info --json: holes overlap (${overlaps%% *} times, e.g. ${overlaps#* }): each discarded range should be recorded once"
fi
# Pages covered by the union of discarded holes.
hole_pages=$(jqf "$IMAGE.info" '[.holes[] | select(.reason == "discarded") | {s: (.start | num), e: (.end | num)}] |
        sort_by(.s) | reduce .[] as $h ({end: 0, n: 0};
                if $h.e <= .end then . else {end: $h.e, n: (.n + ($h.e - ([$h.s, .end] | max)))} end) | .n / 4096' -r)
log "discarded: $discarded pages in the result, $hole_pages pages under discarded holes"
((hole_pages == discarded)) ||
        soft_fail "discarded holes cover $hole_pages pages, the dump reported pages_discarded=$discarded"
meta_discarded=$(jqf "$IMAGE.info" '.meta.stats.pages_discarded' -r)
((meta_discarded == discarded)) ||
        soft_fail "info --json meta.stats.pages_discarded=$meta_discarded, the dump reported $discarded"

# cat on a discarded address: exit 4, nothing on stdout.
if ((n_discarded_holes > 0)); then
        hole_start=$(jqf "$IMAGE.info" '[.holes[] | select(.reason == "discarded")][0].start | num' -r)
        hole_end=$(jqf "$IMAGE.info" '[.holes[] | select(.reason == "discarded")][0].end | num' -r)
        for addr in "$hole_start" $(((hole_start + hole_end) / 2 & ~7)) $((hole_end - 8)); do
                rc=0
                "$LIVESNAP" cat "$IMAGE" "$addr" 8 >"$TEST_TMP/hole.out" 2>"$TEST_TMP/hole.err" || rc=$?
                ((rc == 4)) || soft_fail "livesnap cat of discarded address $(printf 0x%x "$addr") exited $rc, expected 4 ($(cat "$TEST_TMP/hole.err"))"
                [[ ! -s $TEST_TMP/hole.out ]] ||
                        soft_fail "livesnap cat of discarded address $(printf 0x%x "$addr") printed $(stat -c %s "$TEST_TMP/hole.out") bytes"
        done
        # A range that starts before the hole and runs into it: exit 4 too, nothing printed.
        rc=0
        "$LIVESNAP" cat "$IMAGE" $((hole_start - 4096)) 8192 >"$TEST_TMP/hole.out" 2>/dev/null || rc=$?
        ((rc == 4)) || soft_fail "livesnap cat across the start of discarded hole $(printf 0x%x "$hole_start") exited $rc, expected 4"
        [[ ! -s $TEST_TMP/hole.out ]] ||
                soft_fail "livesnap cat across the start of a hole printed $(stat -c %s "$TEST_TMP/hole.out") bytes"
fi

# ---- what the image holds is exact: ballast windows, and each pool region whole or missing ----

out=$TEST_TMP/check
mkdir "$out"
cp "$VDIR/layout" "$out/"
cat_layout "$IMAGE" "$out" control progress ballast_head ballast_mid ballast_tail
"$VICTIMS/victim-churn" --check "$out" --pool-list >"$out/pool.list" || die "victim-churn --pool-list failed"
held=0 missing=0
while read -r n a l; do
        rc=0
        "$LIVESNAP" cat "$IMAGE" "$a" "$l" >"$out/$n.bin" 2>"$out/$n.err" || rc=$?
        case $rc in
        0) held=$((held + 1)) ;;
        4)
                missing=$((missing + 1))
                [[ ! -s $out/$n.bin ]] || soft_fail "livesnap cat exited 4 for $n but printed data"
                rm -f "$out/$n.bin"
                ;;
        *) die "livesnap cat $a $l ($n) exited $rc: $(cat "$out/$n.err")" ;;
        esac
done <"$out/pool.list"
log "pool regions at the instant: $held in the image, $missing not (discarded)"
if ((discarded > 0 && missing == 0)); then
        soft_fail "every pool region reads back whole, yet $discarded pages were reported discarded"
fi
rc=0
"$VICTIMS/victim-churn" --check "$out" >"$out/check.out" 2>&1 || rc=$?
cat "$out/check.out" >&2
((rc == 0)) || soft_fail "victim-churn --check: $(grep 'CHECK FAILED' "$out/check.out" || tail -n 1 "$out/check.out")"

assert_victim_ok "$VPID" "$VDIR"
soft_failures_check
