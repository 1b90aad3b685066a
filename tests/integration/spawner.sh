#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# livesnapd split as the units run it: the spawner (`livesnapd --spawner`) started on its socket by
# systemd-socket-activate as livesnapd-spawner.socket would, and the bus-facing process
# (`livesnapd --spawner-socket PATH`) on a private dbus-daemon, each under its unit's capability
# bounding set. Checks that
#   - the spawner refuses a peer that is not root (SO_PEERCRED; the socket is made 0666 here so that
#     only that check stands in the way), and goes on serving root;
#   - the bus-facing process forks nothing and a checkpoint through the spawner holds victim-sweep's
#     invariant; the worker is the spawner's child, unfiltered; the spawner refuses its own PID;
#   - when the bus-facing process dies (SIGKILL) with a worker and an export child running, the spawner
#     kills (SIGKILL) and reaps both: nothing outlives the daemon, and the target runs on untraced;
#   - the spawner then serves the next livesnapd, and stops on SIGTERM.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd dbus-daemon busctl jq setpriv systemd-socket-activate python3
LIVESNAPD=${LIVESNAPD:-$BUILD/livesnapd}
[[ -x $LIVESNAPD ]] || die "$LIVESNAPD not built"
top=$(cd "$(dirname "$0")/../.." && pwd)

# ---- a private system bus with our policy ----
private_bus_start

STORE=$TEST_TMP/store
cat >"$TEST_TMP/livesnap.json" <<EOF
{
  "store_dir": "$STORE",
  "rate_limit": "32M"
}
EOF

# bounding_set UNIT: setpriv's --bounding-set for the unit's CapabilityBoundingSet=.
bounding_set() {
	local c set=-all
	for c in $(sed -n 's/^CapabilityBoundingSet=//p' "$top/systemd/$1"); do
		set+=",+$(tr '[:upper:]' '[:lower:]' <<<"${c#CAP_}")"
	done
	echo "$set"
}
status_is() {
	local got
	got=$(awk -v k="$2:" '$1 == k { print $2 }' /proc/"$1"/status)
	[[ $got == "$3" ]] || die "$4: $2 is '$got', expected '$3'"
}
gone() { [[ $(proc_state "$1") == "" || $(proc_state "$1") == Z ]]; }

# ---- the spawner, socket-activated ----
SOCK=$TEST_TMP/spawner.sock
bg_start setpriv --bounding-set="$(bounding_set livesnapd-spawner.service)" --no-new-privs \
	systemd-socket-activate --seqpacket --listen="$SOCK" \
	"$LIVESNAPD" --spawner --config "$TEST_TMP/livesnap.json" 2>"$TEST_TMP/spawner.log"
SPAWNER=$BG_PID
wait_until 10 "the spawner's socket" test -S "$SOCK"
chmod 0666 "$SOCK"

# peer_as_nobody: connects as uid 65534 and prints what the spawner did with the connection.
peer_as_nobody() {
	python3 - "$SOCK" <<'EOF'
import os, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.settimeout(10)
try:
    s.send(bytes(112))
    data = s.recv(256)
    print("closed" if data == b"" else "answered %d bytes" % len(data))
except socket.timeout:
    print("left open")
except OSError as e:
    print("closed" if e.errno in (104, 32) else "error %s" % e)
EOF
}
out=$(peer_as_nobody)
[[ $out == closed ]] || die "the spawner did not close a connection from uid 65534: $out"
wait_until 10 "the spawner's refusal in its log" grep -q "refused a connection from PID [0-9]*, uid 65534" \
	"$TEST_TMP/spawner.log"
log "the spawner refused a peer of uid 65534: $(grep -m1 refused "$TEST_TMP/spawner.log")"

# ---- the bus-facing process, with the spawner's socket ----
DAEMON_PID=
start_daemon() {
	bg_start setpriv --bounding-set="$(bounding_set livesnapd.service)" --no-new-privs \
		"$LIVESNAPD" --config "$TEST_TMP/livesnap.json" --spawner-socket "$SOCK"
	DAEMON_PID=$BG_PID
	wait_until 10 "livesnapd on the bus" busctl status org.livesnap1 >/dev/null 2>&1
}
start_daemon
[[ $(cat /proc/"$SPAWNER"/comm) == livesnapd ]] || die "the spawner is not livesnapd: $(cat /proc/"$SPAWNER"/comm)"
[[ -z $(pgrep -P "$DAEMON_PID") ]] || die "livesnapd forked with a spawner socket: $(pgrep -P "$DAEMON_PID")"
status_is "$DAEMON_PID" Seccomp 2 "the bus-facing process"
status_is "$DAEMON_PID" CapEff 0000000000000009 "the bus-facing process"
status_is "$SPAWNER" Seccomp 0 "the spawner"
status_is "$SPAWNER" CapEff 0000000000280004 "the spawner"
grep -q "serving livesnapd (PID $DAEMON_PID)" "$TEST_TMP/spawner.log" ||
	die "the spawner does not say it serves PID $DAEMON_PID: $(cat "$TEST_TMP/spawner.log")"

victim_start victim-sweep
SWEEP=$VICTIM_PID
SWEEP_DIR=$VICTIM_DIR
"$LIVESNAP" checkpoint "$SWEEP" --wait --json >"$TEST_TMP/cp.json" || die "checkpoint --wait failed"
ID=$(jq -er .id "$TEST_TMP/cp.json")
out=$TEST_TMP/cut
mkdir "$out"
cp "$SWEEP_DIR/layout" "$out/layout"
cat_layout "$STORE/$ID.lsnap" "$out"
victim_check victim-sweep "$out"
assert_victim_ok "$SWEEP" "$SWEEP_DIR"
log "checkpoint $ID through the socket-activated spawner holds victim-sweep's invariant"

expect_exit 1 "$LIVESNAP" checkpoint "$SPAWNER" --wait
grep -q "the worker could not be started: Invalid argument" "$TEST_TMP/err" || die "a checkpoint of the spawner itself: $(cat "$TEST_TMP/err")"
log "the spawner refused to checkpoint itself"

# ---- the daemon killed with a worker and an export child running ----
victim_start victim-churn
SLOW=$VICTIM_PID
SLOW_DIR=$VICTIM_DIR
"$LIVESNAP" checkpoint "$SLOW" >/dev/null || die "the slow checkpoint was refused"
# An export into a FIFO nobody reads (the test holds it open for reading): the export child blocks once
# it is full. busctl cannot pass a file descriptor; python3's dbus module can.
want=1
if /usr/bin/python3 -c 'import dbus' 2>/dev/null; then
	cat >"$TEST_TMP/export.py" <<'EOF'
import dbus, sys
m = dbus.SystemBus().get_object("org.livesnap1", "/org/livesnap1")
m.Export(sys.argv[1], "image", dbus.types.UnixFd(1), dbus_interface="org.livesnap1.Manager", timeout=120)
EOF
	mkfifo "$TEST_TMP/export.fifo"
	exec 7<>"$TEST_TMP/export.fifo"
	bg_start /usr/bin/python3 "$TEST_TMP/export.py" "$ID" >&7 2>"$TEST_TMP/export.err"
	want=2
else
	log "no dbus module for /usr/bin/python3 (Debian: python3-dbus): only a worker is left to the spawner"
fi
n_children() { [[ $(pgrep -P "$SPAWNER" | wc -l) == "$1" ]]; }
wait_until 10 "$want children under the spawner" n_children $want
mapfile -t kids < <(pgrep -P "$SPAWNER")
for k in "${kids[@]}"; do
	status_is "$k" Seccomp 0 "the spawner's child $k"
done
sleep 0.5
kill -KILL "$DAEMON_PID"
for k in "${kids[@]}"; do
	wait_until 10 "the spawner's child $k to be killed" gone "$k"
done
# A killed worker is a zombie until its last thread has closed the userfaultfd, which un-protects
# what the copier left protected in the target (saved windows stay protected since 3c84540): then the
# spawner reaps it.
no_children() { [[ -z $(pgrep -P "$SPAWNER") ]]; }
wait_until 10 "the spawner to reap its children" no_children
wait_until 10 "the spawner's note of the closed connection" \
	grep -q "connection closed by livesnapd (PID $DAEMON_PID); killed the $want child" "$TEST_TMP/spawner.log"
gone "$SPAWNER" && die "the spawner stopped with its peer"
assert_victim_ok "$SLOW" "$SLOW_DIR"
log "killed daemon: the spawner killed the $want children it left (worker, export child); the target runs on"
exec 7>&-

# ---- the next daemon ----
start_daemon
grep -q "serving livesnapd (PID $DAEMON_PID)" "$TEST_TMP/spawner.log" || die "the spawner does not serve the new daemon"
"$LIVESNAP" checkpoint "$SWEEP" --wait >/dev/null || die "a checkpoint after the restart failed"
ls -A "$STORE" | grep -q '^\.' && die "a temporary file was left: $(ls -A "$STORE")"
log "a new daemon gets the spawner and checkpoints"

# A stopped daemon (SIGTERM) with a job running: its worker aborts cleanly before the socket closes.
"$LIVESNAP" checkpoint "$SLOW" >/dev/null || die "the slow checkpoint was refused"
wait_until 10 "a worker under the spawner" pgrep -P "$SPAWNER" >/dev/null
sleep 0.5
kill -TERM "$DAEMON_PID"
wait_until 30 "livesnapd to stop on SIGTERM" gone "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
((rc == 0)) || die "livesnapd exited $rc on SIGTERM, expected 0"
wait_until 10 "the spawner's note of the closed connection" \
	grep -q "connection closed by livesnapd (PID $DAEMON_PID); killed the 0 children it left" "$TEST_TMP/spawner.log"
assert_victim_ok "$SLOW" "$SLOW_DIR"
if ls -A "$STORE" | grep -q '^\.'; then die "a temporary file survived a stop: $(ls -A "$STORE")"; fi
log "stopped daemon: its worker aborted before the connection closed"

kill -TERM "$SPAWNER"
wait_until 10 "the spawner to stop on SIGTERM" gone "$SPAWNER"
rc=0
wait "$SPAWNER" || rc=$?
((rc == 0)) || die "the spawner exited $rc on SIGTERM, expected 0"
log "the spawner stopped on SIGTERM"
