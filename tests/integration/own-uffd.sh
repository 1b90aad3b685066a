#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A target that uses userfaultfd itself: livesnap's registration of that range fails with EBUSY, so it
# copies the range while the target is stopped. The dump succeeds, the range in the image is what the
# target's uffd filled, and the target's own uffd keeps serving its faults afterwards.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build

victim_start victim-ownuffd
IMAGE=$TEST_TMP/own.lsnap
dump "$VICTIM_PID" "$IMAGE"
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
