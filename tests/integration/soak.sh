#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# timeout: 400
# Soak: 200 checkpoints in a row through livesnapd (on a private bus) of a busy victim-sweep, each one
# checked from its image for the victim's invariant (one cut per sweep, consistent with the control
# page saved at the same instant: a torn or late copy breaks it) and deleted with `livesnap delete`.
# Then the daemon must hold no more file descriptors than after checkpoint 20 (every livesnapd
# process counted: the bus-facing one and its spawner), its memory (Rss, and Private_Clean +
# Private_Dirty, of smaps_rollup, summed over both) must not have grown by more than
# SOAK_MEM_SLACK_KIB since then, its store and job list must be empty, and the victim must be alive, not stopped, not traced and still sweeping.
#
# Pss is printed, not judged: it also moves when other processes that map the same libraries come
# and go (+158 kB over a run here with Rss +4 kB), which private memory and Rss do not.
#
# The victim's regions are 256 KiB (not 8 MiB), and its sweepers pause 500 us between sweeps: the test
# is about what the daemon keeps across many checkpoints, and small images let 200 of them take 25 s
# on an idle 2-CPU machine (0.12 s each, most of it the engine's own). The victim is not
# niced: a checkpoint waits for each of its threads to reach a ptrace stop and to run the injected
# syscalls, which a thread at nice 19 does late on a loaded machine (4 s a checkpoint at load average
# 35, against 1 s at nice 0 with the pauses). Most checkpoints still freeze some sweeps half-way, and
# the test requires that some do. The "timeout: 400" above is for a machine loaded by other work.
# An image is checked (and deleted) in the background while the next checkpoint is taken.
#
# SOAK_N (default 200) sets the number of checkpoints; SOAK_MEM_SLACK_KIB (default 512) the memory
# growth allowed: less than 3 KiB a checkpoint over 180.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd dbus-daemon busctl jq pgrep
N=${SOAK_N:-200}
BASELINE_AT=20
((N > BASELINE_AT)) || die "SOAK_N must be more than $BASELINE_AT"
MEM_SLACK_KIB=${SOAK_MEM_SLACK_KIB:-512}

private_bus_start
STORE=$TEST_TMP/store
cat >"$TEST_TMP/livesnap.json" <<EOF
{ "store_dir": "$STORE", "max_jobs": 2 }
EOF
livesnapd_start "$TEST_TMP/livesnap.json"
DAEMON=$DAEMON_PID
SPAWNER=$SPAWNER_PID
log "livesnapd: PID $DAEMON, its spawner PID $SPAWNER"

victim_start victim-sweep --region-kib 256 --pause-us 500
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR

daemon_alive() {
        local p
        for p in "$DAEMON" "$SPAWNER"; do
                [[ -n $(proc_state "$p") && $(proc_state "$p") != Z ]] || die "livesnapd process $p died"
        done
}
# No worker left: the spawner has no child.
no_worker() { ! pgrep -P "$SPAWNER" >/dev/null; }

# snapshot_daemon: sets FDS, RSS, PRIV (Private_Clean + Private_Dirty) and PSS (kB), summed over the bus-facing process and the spawner,
# and DETAIL, the same per process.
snapshot_daemon() {
        local p n rss pss priv
        FDS=0 RSS=0 PRIV=0 PSS=0 DETAIL=
        for p in "$DAEMON" "$SPAWNER"; do
                n=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 | wc -l)
                rss=$(awk '$1 == "Rss:" { print $2 }' "/proc/$p/smaps_rollup")
                pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup")
                priv=$(awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" { n += $2 } END { print n }' "/proc/$p/smaps_rollup")
                [[ -n $rss && -n $pss && -n $priv ]] || die "cannot read /proc/$p/smaps_rollup"
                FDS=$((FDS + n)) RSS=$((RSS + rss)) PRIV=$((PRIV + priv)) PSS=$((PSS + pss))
                DETAIL+="${DETAIL:+; }PID $p: $n fds, Rss $rss kB, private $priv kB, Pss $pss kB"
        done
}

# check_image I ID: the victim's invariant in checkpoint I, then deletes it. Runs in the background;
# writes the number of regions caught in the middle of a sweep to $TEST_TMP/inprogress.I.
check_image() {
        local i=$1 id=$2 image=$STORE/$2.lsnap out=$TEST_TMP/check.$1 rc=0
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out"
        "$VICTIMS/victim-sweep" --check "$out" >"$out/check.out" 2>&1 || rc=$?
        ((rc == 0)) || die "checkpoint $i ($id) is not point-in-time: $(cat "$out/check.out")"
        grep -c "in progress," "$out/check.out" >"$TEST_TMP/inprogress.$i" || true
        "$LIVESNAP" delete "$id" >/dev/null 2>"$out/delete.err" || die "delete of checkpoint $i ($id) failed: $(cat "$out/delete.err")"
        [[ ! -e $image ]] || die "checkpoint $i: $image is still there after delete"
        rm -rf "$out"
}

CHECKER=
wait_checker() {
        [[ -n $CHECKER ]] || return 0
        wait "$CHECKER" || die "the check of a checkpoint failed (above)"
        CHECKER=
}

FDS0=0 RSS0=0 PRIV0=0 PSS0=0 start=$SECONDS
for ((i = 1; i <= N; i++)); do
        "$LIVESNAP" checkpoint "$VPID" --label "soak $i" --wait --json >"$TEST_TMP/cp.json" 2>"$TEST_TMP/cp.err" ||
                die "checkpoint $i failed: $(cat "$TEST_TMP/cp.err")"
        id=$(jq -er .id "$TEST_TMP/cp.json")
        [[ -f $STORE/$id.lsnap ]] || die "checkpoint $i: $id.lsnap is not in the store"
        (($(jq -er .pages_unsaved "$TEST_TMP/cp.json") == 0)) || die "checkpoint $i: pages left unsaved: $(cat "$TEST_TMP/cp.json")"
        (($(jq -er .threads "$TEST_TMP/cp.json") == 7)) || die "checkpoint $i: not 7 threads: $(cat "$TEST_TMP/cp.json")"
        wait_checker
        check_image "$i" "$id" &
        CHECKER=$!
        cleanup_add "$CHECKER"

        if ((i == BASELINE_AT || i == N)); then
                wait_checker
                wait_until 10 "the last worker to be reaped" no_worker
                daemon_alive
                snapshot_daemon
                log "after $i checkpoints ($((SECONDS - start)) s): $FDS fds, Rss $RSS kB, private $PRIV kB, Pss $PSS kB ($DETAIL)"
                ((i == BASELINE_AT)) && FDS0=$FDS RSS0=$RSS PRIV0=$PRIV PSS0=$PSS
        elif ((i % 50 == 0)); then
                daemon_alive
                assert_victim_ok "$VPID" "$VDIR"
                log "$i checkpoints ($((SECONDS - start)) s)"
        fi
done

inprogress=$(cat "$TEST_TMP"/inprogress.* | awk '{ n += $1 } END { print n + 0 }')
log "$N checkpoints in $((SECONDS - start)) s; $inprogress of $((7 * N)) regions caught in the middle of a sweep"
log "growth from checkpoint $BASELINE_AT to $N: fds $FDS0 -> $FDS, Rss $RSS0 -> $RSS kB ($((RSS - RSS0)) kB), private $PRIV0 -> $PRIV kB ($((PRIV - PRIV0)) kB), Pss $PSS0 -> $PSS kB ($((PSS - PSS0)) kB); allowed: no fd, $MEM_SLACK_KIB kB of Rss or private"
if ((FDS > FDS0)); then
        for p in "$DAEMON" "$SPAWNER"; do
                log "PID $p's fds: $(find "/proc/$p/fd" -mindepth 1 -printf '%f->%l ' | head -c 3000)"
        done
        soft_fail "livesnapd holds $FDS file descriptors after $N checkpoints, $FDS0 after $BASELINE_AT (listed above)"
fi
((RSS - RSS0 <= MEM_SLACK_KIB)) || soft_fail "livesnapd's Rss grew by $((RSS - RSS0)) kB from checkpoint $BASELINE_AT to $N"
((PRIV - PRIV0 <= MEM_SLACK_KIB)) || soft_fail "livesnapd's private memory grew by $((PRIV - PRIV0)) kB from checkpoint $BASELINE_AT to $N"
# The invariant was put to the test: some checkpoints froze sweeps half-way.
((inprogress > 0)) || soft_fail "no region was caught in the middle of a sweep: the victim did not run"
left=$("$LIVESNAP" list --json | jq length)
((left == 0)) || soft_fail "$left checkpoint(s) left in the daemon's list after deleting all"
[[ -z $(ls -A "$STORE") ]] || soft_fail "files left in the store: $(ls -A "$STORE")"
[[ $("$LIVESNAP" jobs --json | jq length) == 0 ]] || soft_fail "jobs left: $("$LIVESNAP" jobs --json)"
assert_victim_ok "$VPID" "$VDIR"
soft_failures_check
log "$N checkpoints, each point-in-time and deleted; no growth in livesnapd"
