#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# SIGKILL the dumping process at every phase (LIVESNAP_TEST_STOP_AT makes it stop itself with SIGSTOP
# on entering a phase) and at random moments of a rate-limited dump. Whatever the moment, the target
# must be left running: no thread stopped or traced, none blocked in a userfaultfd fault, every
# sweeping thread making progress, no image (nor temporary file) left behind, and the target can be
# dumped again consistently.
#
# The sweepers pause 5 ms between sweeps and run at nice 10 here: they still write all the time, but
# leave this 2-CPU machine room for the many livesnap runs of this test.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd jq

# all_threads_in STATE PID
all_threads_in() {
        local s
        for s in $(thread_states "$2"); do
                [[ $s == "$1" ]] || return 1
        done
}

# after_kill LABEL VPID VDIR OUTDIR: the checks after the dumper was killed.
after_kill() {
        local label=$1 vpid=$2 vdir=$3 outdir=$4 left
        assert_victim_ok "$vpid" "$vdir" "victim after killing livesnap ($label)"
        left=$(ls -A "$outdir")
        [[ -z $left ]] || die "$label: killed dump left files in the output directory: $left"

        # The victim carries no leftover state (registrations, protection): a new dump works.
        local image=$TEST_TMP/redump.img out=$TEST_TMP/redump
        dump "$vpid" "$image"
        mkdir "$out"
        cp "$vdir/layout" "$out/"
        cat_layout "$image" "$out" control progress anon thp memfd arena bss data brk
        victim_check victim-sweep "$out"
        assert_victim_ok "$vpid" "$vdir" "victim after the re-dump ($label)"
        rm -rf "$out" "$image"*
}

test_stop_at() {
        local phase=$1 outdir=$TEST_TMP/out-$1 dpid rc=0
        log "--- SIGKILL at phase $phase"
        VICTIM_NICE=10 victim_start victim-sweep --pause-us 5000
        mkdir "$outdir"
        DUMP_LOG=$TEST_TMP/dump-$phase.log
        LIVESNAP_TEST_STOP_AT=$phase "$LIVESNAP" dump "$VICTIM_PID" -o "$outdir/image" --rate 32M \
                >"$DUMP_LOG" 2>&1 &
        dpid=$!
        cleanup_add "$dpid"
        wait_until 30 "livesnap to stop itself at phase '$phase'" dump_stopped "$dpid" "$DUMP_LOG"

        case $phase in
        frozen)
                # Frozen means frozen: every thread of the target is in a ptrace stop.
                all_threads_in t "$VICTIM_PID" ||
                        die "livesnap stopped at 'frozen' but the victim's threads are in states $(thread_states "$VICTIM_PID" | tr '\n' ' '), expected all t"
                ;;
        preparing)
                # Before the freeze the target runs; the walker has not started protecting yet.
                assert_not_stopped "$VICTIM_PID" "victim during the 'preparing' phase"
                ;;
        copying)
                # The target was resumed (its writers may now wait in userfaultfd for the stopped
                # livesnap, but none is in a ptrace stop).
                assert_not_stopped "$VICTIM_PID" "victim during the 'copying' phase"
                ;;
        esac

        kill -KILL "$dpid"
        { wait "$dpid"; } 2>/dev/null || rc=$?
        ((rc == 137)) || die "livesnap exited $rc, expected death by SIGKILL (137)"
        after_kill "stop at $phase" "$VICTIM_PID" "$VICTIM_DIR" "$outdir"
        kill_wait "$VICTIM_PID"
}

test_kill_after() {
        local delay=$1 outdir=$TEST_TMP/out-delay-$1 dpid rc=0
        log "--- SIGKILL ${delay}s into a rate-limited dump"
        # The sweepers' pages are saved at once by their faults; the ballast makes the dump last:
        # ~100 MiB at 32 MiB/s, about 3 s.
        VICTIM_NICE=10 victim_start victim-sweep --ballast 96 --pause-us 5000
        mkdir "$outdir"
        DUMP_LOG=$TEST_TMP/dump-delay-$delay.log
        "$LIVESNAP" dump "$VICTIM_PID" -o "$outdir/image" --rate 32M >"$DUMP_LOG" 2>&1 &
        dpid=$!
        cleanup_add "$dpid"
        sleep "$delay"
        kill -KILL "$dpid"
        { wait "$dpid"; } 2>/dev/null || rc=$?
        ((rc == 137)) || die "livesnap exited $rc before it was killed ${delay}s in (expected 137; a ~3 s dump): $(cat "$DUMP_LOG")"
        after_kill "kill after ${delay}s" "$VICTIM_PID" "$VICTIM_DIR" "$outdir"
        kill_wait "$VICTIM_PID"
}

for phase in attaching preparing frozen copying finishing; do
        test_stop_at "$phase"
done
for delay in 0.005 0.01 0.02 0.05 0.2 0.5 1.0; do
        test_kill_after "$delay"
done
log "the victim survived every kill"
