#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Targets livesnap must refuse, each with exit status 1, "Failed to dump PID N" and a reason phrase
# on stderr, no image, and the target left exactly as it was: itself, a kernel thread, a zombie, a
# PID that does not exist, a process it may not trace, and one that is already traced.
# (A target with a seccomp filter is refused to a non-root caller: see seccomp.sh.)
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_root
require_build
require_cmd setpriv
id nobody >/dev/null 2>&1 || skip "needs the user 'nobody'"

OUTDIR=$TEST_TMP/images
mkdir "$OUTDIR"
chmod 0777 "$OUTDIR"

# expect_refusal PID PHRASE [PREFIX COMMAND...]: `livesnap dump PID` (run through PREFIX, if any) is
# refused with PHRASE; no image is left.
expect_refusal() {
        local pid=$1 phrase=$2 image=$OUTDIR/refused.img rc=0
        shift 2
        "$@" "$LIVESNAP" dump "$pid" -o "$image" >"$TEST_TMP/out" 2>"$TEST_TMP/err" || rc=$?
        log "dump $pid: exit $rc: $(cat "$TEST_TMP/err")"
        ((rc == 1)) || die "dump of PID $pid ($phrase) exited $rc, expected 1; stderr: $(cat "$TEST_TMP/err")"
        grep -qi -- "$phrase" "$TEST_TMP/err" || die "refusal of PID $pid does not say '$phrase': $(cat "$TEST_TMP/err")"
        grep -q "Failed to dump PID $pid" "$TEST_TMP/err" ||
                die "refusal of PID $pid does not say 'Failed to dump PID $pid': $(cat "$TEST_TMP/err")"
        [[ ! -e $image ]] || die "the refused dump of PID $pid left $image"
        [[ -z $(ls -A "$OUTDIR") ]] || die "the refused dump of PID $pid left files: $(ls -A "$OUTDIR")"
}

# assert_untouched PID [TRACER]: running or sleeping, not stopped, traced by TRACER (default: none).
assert_untouched() {
        local pid=$1 tracer=${2:-0} t
        assert_alive "$pid" "target $pid"
        assert_not_stopped "$pid" "target $pid"
        t=$(awk '/^TracerPid:/ {print $2}' /proc/"$pid"/status)
        [[ $t == "$tracer" ]] || die "target $pid: TracerPid is $t, expected $tracer"
}

test_itself() {
        local rc=0
        log "--- itself"
        LIVESNAP=$LIVESNAP IMAGE=$OUTDIR/self.img bash -c 'exec "$LIVESNAP" dump $$ -o "$IMAGE"' \
                >"$TEST_TMP/out" 2>"$TEST_TMP/err" || rc=$?
        log "exit $rc: $(cat "$TEST_TMP/err")"
        ((rc == 1)) || die "livesnap dumping itself exited $rc, expected 1: $(cat "$TEST_TMP/err")"
        grep -q "itself" "$TEST_TMP/err" || die "the refusal to dump itself does not say 'itself': $(cat "$TEST_TMP/err")"
        [[ -z $(ls -A "$OUTDIR") ]] || die "the refused self-dump left files: $(ls -A "$OUTDIR")"
}

test_kernel_thread() {
        local pid="" p flags
        log "--- kernel thread"
        if [[ $(cat /proc/2/comm 2>/dev/null) == kthreadd ]]; then
                pid=2
        else
                # In a PID namespace PID 2 is something else: look for a thread with PF_KTHREAD.
                for p in /proc/[0-9]*; do
                        flags=$(awk '{print $9}' "$p/stat" 2>/dev/null) || continue
                        if [[ -n $flags ]] && ((flags & 0x00200000)); then
                                pid=${p#/proc/}
                                break
                        fi
                done
        fi
        if [[ -z $pid ]]; then
                log "no kernel thread visible here; not tested"
                return 0
        fi
        expect_refusal "$pid" "kernel thread"
        [[ -e /proc/$pid ]] || die "kernel thread $pid is gone?"
        assert_not_stopped "$pid" "kernel thread $pid"
}

test_zombie() {
        local parent zpid
        log "--- zombie"
        # The subshell forks a short-lived child, then becomes `sleep`, which never reaps it.
        bash -c 'sleep 0.05 & echo $! >"$1"; exec sleep 600' _ "$TEST_TMP/zpid" &
        parent=$!
        cleanup_add "$parent"
        wait_for_file "$TEST_TMP/zpid" 10
        zpid=$(cat "$TEST_TMP/zpid")
        zombie() { [[ $(awk '{print $3}' /proc/"$zpid"/stat 2>/dev/null) == Z ]]; }
        wait_until 10 "PID $zpid to become a zombie" zombie
        expect_refusal "$zpid" "zombie"
        zombie || die "the zombie $zpid is no longer a zombie"
        assert_untouched "$parent"
}

test_no_such_process() {
        local pid
        log "--- no such process"
        pid=$(($(cat /proc/sys/kernel/pid_max) - 1))
        while [[ -e /proc/$pid ]]; do pid=$((pid - 1)); done
        expect_refusal "$pid" "no such process"
}

test_not_permitted() {
        log "--- not permitted (nobody against root's process)"
        bg_start sleep 600
        sleep 0.05
        expect_refusal "$BG_PID" "not permitted" setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" \
                --clear-groups --inh-caps=-all
        assert_untouched "$BG_PID"
}

test_already_traced() {
        local target
        log "--- already traced"
        bg_start sleep 600
        target=$BG_PID
        victim_start victim-tracer "$target"
        assert_untouched "$target" "$VICTIM_PID"
        expect_refusal "$target" "already traced"
        assert_untouched "$target" "$VICTIM_PID"
        assert_alive "$VICTIM_PID" "the other tracer"
        [[ ! -e $VICTIM_DIR/error ]] || die "the other tracer failed: $(cat "$VICTIM_DIR/error")"
}

test_itself
test_kernel_thread
test_zombie
test_no_such_process
test_not_permitted
test_already_traced
log "all refusals correct"
