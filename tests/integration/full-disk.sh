#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The output's file system fills up mid-dump: livesnap fails with a message naming the problem, leaves
# nothing in the output directory, and the target keeps running, unprotected and unharmed.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build

mnt=$TEST_TMP/small
mkdir "$mnt"
mount -t tmpfs -o size=8m none "$mnt" 2>/dev/null || skip "cannot mount a tmpfs here"
at_cleanup "umount '$mnt' 2>/dev/null || true"

victim_start victim-sweep
rc=0
"$LIVESNAP" dump "$VICTIM_PID" -o "$mnt/image" >"$TEST_TMP/out" 2>"$TEST_TMP/err" || rc=$?
((rc == 1)) || die "dump onto a full file system exited $rc, expected 1: $(cat "$TEST_TMP/err")"
grep -q "No space left on device" "$TEST_TMP/err" ||
	die "the error does not say the disk is full: $(cat "$TEST_TMP/err")"
log "livesnap said: $(cat "$TEST_TMP/err")"
left=$(ls -A "$mnt")
[[ -z $left ]] || die "a failed dump left files behind: $left"
assert_victim_ok "$VICTIM_PID" "$VICTIM_DIR"
log "full disk: clear error, nothing left behind, target intact"
