#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared memory written by another process during the checkpoint. victim-sharedwriter (the target)
# maps a memfd and MAP_SHARED|MAP_ANONYMOUS memory that its forked child keeps sweeping, and a memfd
# the child holds open and pwrite()s; uffd write-protect cannot see those writes, so the image must
# mark the three mappings not point-in-time. A fourth memfd is mapped by the target alone: it must
# stay point-in-time (not flagged) and read back exactly as at the instant.
#
# Checks, for each dump:
#   - the dump succeeds, the target and its child are unharmed;
#   - own_memfd is not flagged "not-point-in-time" and its content is consistent (this needs nothing
#     new from the engine and fails the test if broken);
#   - once the engine marks memory shared with other processes (`info --json` has .meta.shared_elsewhere,
#     a list of {dev, inode, pids}, or flags any of the three): shared_memfd, shared_anon and shared_fd
#     are all flagged "not-point-in-time", and .meta.shared_elsewhere, if present, names the child.
# An engine that flags none of them fails the test.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

VICTIM_NICE=5 victim_start victim-sharedwriter
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
CHILD=$(cat "$VDIR/child")
[[ $(ppid_of "$CHILD") == "$VPID" ]] || die "the writer child $CHILD is not the victim's child"
log "target $VPID, writer child $CHILD"

SHARED=(shared_memfd shared_anon shared_fd)
integrated=0

# flags_of IMAGE.info NAME: the flags of the mapping holding layout entry NAME, one per line.
flags_of() {
        local info=$1 a
        a=$(layout_get "$VDIR" "$2" addr)
        jqf "$info" '($a | num) as $s | [.mappings[] | select((.start | num) <= $s and (.end | num) > $s)] |
                if length == 1 then .[0].flags[] else error("no single mapping at \($a)") end' --arg a "$a" -r
}

has_flag() { grep -qx -- "$2" <<<"$1"; }

# dump_and_check LABEL [DUMP OPTIONS...]
dump_and_check() {
        local label=$1 image="$TEST_TMP/$1.img" out="$TEST_TMP/$1.out" rc=0 n fl flagged=0
        shift
        log "--- $label: dump $*"
        dump "$VPID" "$image" "$@"
        verify_ok "$image"
        assert_victim_ok "$VPID" "$VDIR"
        assert_alive "$CHILD" "the writer child"
        "$LIVESNAP" info "$image" --json >"$image.info" || die "livesnap info --json exited $?"

        # Mapped by the target alone: point-in-time, whatever else the engine learns.
        fl=$(flags_of "$image.info" own_memfd) || die "$label: info --json: $fl"
        has_flag "$fl" shared || die "$label: own_memfd is not a shared mapping in the image: $(echo $fl)"
        ! has_flag "$fl" not-point-in-time ||
                die "$label: own_memfd, mapped by the target alone, is flagged not-point-in-time"

        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out" control own_memfd "${SHARED[@]}"
        "$VICTIMS/victim-sharedwriter" --check "$out" >"$out/check.out" 2>&1 || rc=$?
        cat "$out/check.out" >&2
        ((rc == 0)) || die "$label: own_memfd is not as it was at the instant: $(grep 'CHECK FAILED' "$out/check.out" || tail -n 1 "$out/check.out")"

        for n in "${SHARED[@]}"; do
                fl=$(flags_of "$image.info" "$n") || die "$label: info --json: $fl"
                if has_flag "$fl" not-point-in-time; then
                        flagged=$((flagged + 1))
                fi
        done
        if jq -e '.meta | has("shared_elsewhere")' "$image.info" >/dev/null || ((flagged > 0)); then
                integrated=1
        fi
        if ((integrated)); then
                for n in "${SHARED[@]}"; do
                        fl=$(flags_of "$image.info" "$n")
                        has_flag "$fl" not-point-in-time ||
                                die "$label: $n, written by the child $CHILD during the dump, is not flagged not-point-in-time (flags: $(echo $fl))"
                done
                if jq -e '.meta | has("shared_elsewhere")' "$image.info" >/dev/null; then
                        jqf "$image.info" '.meta.shared_elsewhere | type == "array"' >/dev/null ||
                                die "$label: .meta.shared_elsewhere is not a list"
                        jqf "$image.info" '[.meta.shared_elsewhere[] | select(.pids | index($c))] | length >= 3' \
                                --argjson c "$CHILD" >/dev/null ||
                                die "$label: .meta.shared_elsewhere does not name the child $CHILD for the three objects: $(jq -c .meta.shared_elsewhere "$image.info")"
                fi
                log "$label: the three shared mappings are flagged not-point-in-time"
        else
                log "$label: $flagged of ${#SHARED[@]} mappings shared with the child are flagged not-point-in-time"
        fi
        rm -rf "$out" "$image"
}

dump_and_check plain
# Slow copying: the shared regions are copied long after the instant, torn by the child's sweeps.
dump_and_check rate --rate 32M

assert_victim_ok "$VPID" "$VDIR"
assert_alive "$CHILD" "the writer child"
((integrated)) || die "the images flag none of the shared mappings not-point-in-time and have no .meta.shared_elsewhere"
log "all checks passed"
