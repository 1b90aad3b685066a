#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A target that uses userfaultfd itself: livesnap's registration of that range fails with EBUSY, so it
# copies the range while the target is stopped. The dump succeeds, the range in the image is what the
# target's uffd filled, and the target's own uffd keeps serving its faults afterwards. The target's
# write-protected region with empty pages ("marked", PTE markers of its own uffd) is copied without
# reading those pages: as many pages present after the dump as before.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build

victim_start victim-ownuffd
IMAGE=$TEST_TMP/own.lsnap
marked=
if grep -q '^marked ' "$VICTIM_DIR/layout"; then
        marked=$(layout_get "$VICTIM_DIR" marked addr)
        marked_pages=$(($(layout_get "$VICTIM_DIR" marked len) / 4096))
        before=$(pages_present "$VICTIM_PID" "$marked" "$marked_pages")
else
        log "the kernel refused WP_UNPOPULATED to the victim: its PTE-marker region is not checked"
fi
dump "$VICTIM_PID" "$IMAGE"
if [[ -n $marked ]]; then
        after=$(pages_present "$VICTIM_PID" "$marked" "$marked_pages")
        ((after == before)) ||
                die "the dump made $((after - before)) of the target's write-protected empty pages present ($before before)"
        log "the target's write-protected empty pages: $after of $marked_pages present after the dump, as before"
fi
out=$TEST_TMP/check
mkdir "$out"
cp "$VICTIM_DIR/layout" "$out/"
cat_layout "$IMAGE" "$out"
victim_check victim-ownuffd "$out"
# Not assert_victim_ok: this victim's threads wait in its own userfaultfd all the time, by design.
assert_alive "$VICTIM_PID"
[[ ! -e $VICTIM_DIR/error ]] || die "the victim reported: $(cat "$VICTIM_DIR/error")"
assert_not_stopped "$VICTIM_PID"
assert_not_traced "$VICTIM_PID"
assert_progressing "$VICTIM_PID" "$VICTIM_DIR" 0.5 "the victim (faulting through its own uffd)"
log "a target with its own userfaultfd: dumped, consistent, its uffd still serving"
