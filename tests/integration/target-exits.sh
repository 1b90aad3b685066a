#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A target that calls execve or exits during the checkpoint: the dump fails with a clear message and
# leaves no image; after an exec the new program runs free (not stopped, not traced).
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build

# Running and not a zombie (kill -0 succeeds on a child that has exited and not been waited for).
process_running() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]
}

copying_or_ended() {
	grep -q 'phase copying' "$TEST_TMP/dump.err" || ! process_running "$1"
}

for how in exec exit; do
	victim_start victim-exec
	out=$TEST_TMP/out-$how
	mkdir "$out"
	# The debug lines say when the copy phase starts (the 256 MiB take ~8 s at 32 MB/s): the target
	# acts then, whatever the machine's load made of the attach and the freeze.
	LIVESNAP_DEBUG=1 "$LIVESNAP" dump "$VICTIM_PID" -o "$out/image" --rate 32M >"$TEST_TMP/dump.out" \
		2>"$TEST_TMP/dump.err" &
	dpid=$!
	cleanup_add "$dpid"
	wait_until 30 "the dump's copy phase" copying_or_ended "$dpid"
	process_running "$dpid" || die "$how: the dump ended before the target could $how: $(cat "$TEST_TMP/dump.err")"
	if [[ $how == exec ]]; then kill -USR1 "$VICTIM_PID"; else kill -USR2 "$VICTIM_PID"; fi
	rc=0
	wait "$dpid" || rc=$?
	((rc == 1)) || die "$how: the dump exited $rc, expected 1: $(cat "$TEST_TMP/dump.err")"
	if [[ $how == exec ]]; then
		grep -q "execve" "$TEST_TMP/dump.err" || die "exec: the error does not say so: $(cat "$TEST_TMP/dump.err")"
		wait_until 5 "the new program" bash -c "[[ \$(cat /proc/$VICTIM_PID/comm) == sleep ]]"
		assert_not_stopped "$VICTIM_PID" "the exec'd target"
		assert_not_traced "$VICTIM_PID" "the exec'd target"
	else
		grep -q "exited" "$TEST_TMP/dump.err" || die "exit: the error does not say so: $(cat "$TEST_TMP/dump.err")"
	fi
	left=$(ls -A "$out")
	[[ -z $left ]] || die "$how: a failed dump left files: $left"
	log "$how during the dump: $(cat "$TEST_TMP/dump.err")"
	kill -KILL "$VICTIM_PID" 2>/dev/null || true
	{ wait "$VICTIM_PID"; } 2>/dev/null || true
done
