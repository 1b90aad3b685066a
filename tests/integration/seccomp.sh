#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A target whose seccomp filter kills it on userfaultfd(). As root, livesnap must suspend the filter
# for its injected syscalls (PTRACE_O_SUSPEND_SECCOMP) and take a good image; the target survives.
# As a non-root user holding only CAP_SYS_PTRACE (enough to trace the target, not to suspend its
# filter), livesnap must refuse with "seccomp" before injecting anything; the target survives.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq setpriv
id nobody >/dev/null 2>&1 || skip "needs the user 'nobody'"

NOBODY_UID=$(id -u nobody)
NOBODY_GID=$(id -g nobody)
OUTDIR=$TEST_TMP/images
mkdir "$OUTDIR"
chmod 0777 "$OUTDIR"

check_filtered() {
        grep -q '^Seccomp:[[:space:]]*2' /proc/"$1"/status || die "victim $1 has no seccomp filter: $(grep Seccomp /proc/"$1"/status)"
}

# As root: the dump succeeds, the image is consistent, the victim lives on.
test_root_dump() {
        local image=$OUTDIR/root.img out=$TEST_TMP/check-root
        log "--- root dumps a filtered victim"
        victim_start victim-seccomp
        check_filtered "$VICTIM_PID"
        dump "$VICTIM_PID" "$image"
        assert_victim_ok "$VICTIM_PID" "$VICTIM_DIR"
        verify_ok "$image"
        mkdir "$out"
        cp "$VICTIM_DIR/layout" "$out/"
        cat_layout "$image" "$out"
        victim_check victim-seccomp "$out"
        # Again, rate-limited, so the victim writes while protected.
        dump "$VICTIM_PID" "$image" --rate 16M
        assert_victim_ok "$VICTIM_PID" "$VICTIM_DIR"
        check_filtered "$VICTIM_PID"
        kill_wait "$VICTIM_PID"
}

# As nobody with only CAP_SYS_PTRACE, against nobody's filtered victim: refused with "seccomp".
test_nonroot_refusal() {
        local image=$OUTDIR/nobody.img rc=0
        log "--- nobody with CAP_SYS_PTRACE dumps nobody's filtered victim"
        VICTIM_USER=nobody victim_start victim-seccomp
        check_filtered "$VICTIM_PID"
        setpriv --reuid="$NOBODY_UID" --regid="$NOBODY_GID" --clear-groups \
                --inh-caps=+sys_ptrace --ambient-caps=+sys_ptrace \
                "$LIVESNAP" dump "$VICTIM_PID" -o "$image" >"$TEST_TMP/nobody.out" 2>"$TEST_TMP/nobody.err" || rc=$?
        cat "$TEST_TMP/nobody.err" >&2
        [[ $(awk '{print $3}' /proc/"$VICTIM_PID"/stat 2>/dev/null) =~ ^[RSDtT]$ ]] ||
                die "the filtered victim died: livesnap called userfaultfd() in it instead of refusing"
        ((rc == 1)) || die "livesnap dump as nobody+CAP_SYS_PTRACE exited $rc, expected 1 (refusal)"
        grep -q "seccomp" "$TEST_TMP/nobody.err" || die "the refusal does not mention seccomp: $(cat "$TEST_TMP/nobody.err")"
        grep -q "Failed to dump PID $VICTIM_PID" "$TEST_TMP/nobody.err" ||
                die "the refusal does not say 'Failed to dump PID $VICTIM_PID': $(cat "$TEST_TMP/nobody.err")"
        [[ ! -e $image ]] || die "a refused dump left $image"
        assert_victim_ok "$VICTIM_PID" "$VICTIM_DIR"
        kill_wait "$VICTIM_PID"
}

test_root_dump
test_nonroot_refusal
