#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# timeout: 900
# Soak: 200 checkpoints in a row through livesnapd (on a private bus) of a busy victim-sweep, each
# checked from its image (the victim's invariant: one cut per sweep, counters that agree) and deleted
# at once. Then the daemon must hold no more file descriptors than after the first 20 checkpoints
# (every livesnapd process counted: the bus-facing one and its spawner), and its memory (Rss and Pss of
# smaps_rollup, both processes) must not have grown by more than SOAK_MEM_SLACK_KIB (default 1024 KiB)
# since then; the victim must be alive, not stopped, not traced and still sweeping.
#
# SOAK_N (default 200) sets the number of checkpoints.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd dbus-daemon jq
LIVESNAPD=${LIVESNAPD:-$BUILD/livesnapd}
[[ -x $LIVESNAPD ]] || die "$LIVESNAPD not built"
top=$(cd "$(dirname "$0")/../.." && pwd)
N=${SOAK_N:-200}
BASELINE_AT=20
((N > BASELINE_AT)) || die "SOAK_N must be more than $BASELINE_AT"
MEM_SLACK_KIB=${SOAK_MEM_SLACK_KIB:-1024}

cat >"$TEST_TMP/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$TEST_TMP/bus.socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>$top/systemd/org.livesnap1.conf</include>
</busconfig>
EOF
bg_start dbus-daemon --config-file="$TEST_TMP/bus.conf" --nofork --nopidfile
wait_until 10 "the private bus" test -S "$TEST_TMP/bus.socket"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$TEST_TMP/bus.socket

STORE=$TEST_TMP/store
cat >"$TEST_TMP/livesnap.json" <<EOF
{ "store_dir": "$STORE", "max_jobs": 2 }
EOF
bg_start "$LIVESNAPD" --config "$TEST_TMP/livesnap.json"
DAEMON=$BG_PID
wait_until 10 "livesnapd on the bus" "$LIVESNAP" list

VICTIM_NICE=5 victim_start victim-sweep
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR

# The daemon's processes: the bus-facing one and its children (the spawner; workers come and go).
daemon_pids() {
        echo "$DAEMON"
        pgrep -P "$DAEMON" -x livesnapd || true
}
count_fds() {
        local n=0 p
        for p in $(daemon_pids); do
                n=$((n + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
        done
        echo "$n"
}
# Sum of a smaps_rollup field (kB) over the daemon's processes.
mem_kib() {
        local field=$1 n=0 p v
        for p in $(daemon_pids); do
                v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
                n=$((n + ${v:-0}))
        done
        echo "$n"
}
# Waits until no worker is running (only the bus-facing process and the spawner are left).
quiet() {
        local p n=0
        for p in $(daemon_pids); do n=$((n + 1)); done
        ((n <= 2))
}

fds0=0 rss0=0 pss0=0
start=$SECONDS
for ((i = 1; i <= N; i++)); do
        "$LIVESNAP" checkpoint "$VPID" --label "soak $i" --wait --json >"$TEST_TMP/cp.json" 2>"$TEST_TMP/cp.err" ||
                die "checkpoint $i failed: $(cat "$TEST_TMP/cp.err")"
        id=$(jq -er .id "$TEST_TMP/cp.json")
        image=$STORE/$id.lsnap
        [[ -f $image ]] || die "checkpoint $i: $image is not in the store"
        (($(jq -er .pages_unsaved "$TEST_TMP/cp.json") == 0)) || die "checkpoint $i: pages left unsaved"

        out=$TEST_TMP/check
        rm -rf "$out"
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$image" "$out"
        "$VICTIMS/victim-sweep" --check "$out" >"$out/check.out" 2>&1 ||
                die "checkpoint $i ($id) is not point-in-time: $(cat "$out/check.out")"
        "$LIVESNAP" delete "$id" >/dev/null || die "deleting checkpoint $i ($id) failed"
        [[ ! -e $image ]] || die "checkpoint $i: $image is still there after delete"

        if ((i == BASELINE_AT)); then
                wait_until 10 "the workers to be reaped" quiet
                fds0=$(count_fds) rss0=$(mem_kib Rss) pss0=$(mem_kib Pss)
                log "after $i checkpoints: $fds0 fds, Rss $rss0 kB, Pss $pss0 kB ($((SECONDS - start)) s)"
        fi
        ((i % 50 == 0)) && log "$i checkpoints ($((SECONDS - start)) s)"
done

wait_until 10 "the workers to be reaped" quiet
fds=$(count_fds) rss=$(mem_kib Rss) pss=$(mem_kib Pss)
log "after $N checkpoints: $fds fds, Rss $rss kB, Pss $pss kB ($((SECONDS - start)) s in all)"
log "growth since checkpoint $BASELINE_AT: fds $((fds - fds0)), Rss $((rss - rss0)) kB, Pss $((pss - pss0)) kB"
((fds <= fds0)) || soft_fail "livesnapd holds $fds file descriptors after $N checkpoints, $fds0 after $BASELINE_AT: $(for p in $(daemon_pids); do ls -l "/proc/$p/fd"; done)"
((rss - rss0 <= MEM_SLACK_KIB)) || soft_fail "livesnapd's Rss grew by $((rss - rss0)) kB from checkpoint $BASELINE_AT to $N (slack $MEM_SLACK_KIB kB)"
((pss - pss0 <= MEM_SLACK_KIB)) || soft_fail "livesnapd's Pss grew by $((pss - pss0)) kB from checkpoint $BASELINE_AT to $N (slack $MEM_SLACK_KIB kB)"
[[ -z $(find "$STORE" -name '*.lsnap*' -print -quit) ]] || soft_fail "images left in the store: $(ls -a "$STORE")"
assert_victim_ok "$VPID" "$VDIR"
soft_failures_check
log "$N checkpoints, each point-in-time; no growth in the daemon"
