#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# livesnapd on a private dbus-daemon that loads the project's own policy file: introspection, a
# checkpoint of the generation-sweep victim through the CLI checked for one cut per sweep, rights
# (a user refused root's process, served for its own, blind to root's checkpoints), job limits,
# cancel, a killed worker and a killed daemon leaving the target intact, restart keeping the store,
# the daemon's own sandbox (the bus-facing process filtered with only CAP_CHOWN and CAP_FOWNER, the
# spawner and its workers unfiltered with only what ptrace needs), a dead spawner stopping the daemon,
# named errors for bad arguments, and bad configurations refused with file and line.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd dbus-daemon busctl jq setpriv
LIVESNAPD=${LIVESNAPD:-$BUILD/livesnapd}
[[ -x $LIVESNAPD ]] || die "$LIVESNAPD not built"
top=$(cd "$(dirname "$0")/../.." && pwd)

# ---- a private system bus with our policy ----
private_bus_start

STORE=$TEST_TMP/store
cat >"$TEST_TMP/livesnap.json" <<EOF
{
  "store_dir": "$STORE",
  "max_jobs": 3,
  "max_jobs_per_user": 2,
  "rate_limit": "32M"
}
EOF

# The daemon, forking its own spawner here, runs with what livesnapd.service and
# livesnapd-spawner.service leave their processes together: the union of the units' capability bounding
# sets (so no CAP_SETPCAP: it cannot shrink its bounding set further) and no_new_privs. (spawner.sh runs
# the two as the units do.)
declare -A CAP_BIT=([CHOWN]=0 [DAC_OVERRIDE]=1 [DAC_READ_SEARCH]=2 [FOWNER]=3 [SETPCAP]=8 [SYS_PTRACE]=19
	[SYS_ADMIN]=21)
UNIT_BOUNDING=-all
unit_mask=0
for c in $(sed -n 's/^CapabilityBoundingSet=//p' "$top/systemd/livesnapd.service" \
	"$top/systemd/livesnapd-spawner.service" | tr ' ' '\n' | sort -u); do
	c=${c#CAP_}
	[[ -n ${CAP_BIT[$c]:-} ]] || die "bus.sh does not know CAP_$c of livesnapd.service"
	UNIT_BOUNDING+=",+${c,,}"
	unit_mask=$((unit_mask | 1 << CAP_BIT[$c]))
done
UNIT_CAPS=$(printf '%016x' "$unit_mask")

DAEMON_PID=
# The workers' image writers keep 256 bytes of index in memory and spill the rest (16 entries a run):
# the spill and the merge, in a worker under the daemon's sandbox, on every checkpoint here.
start_daemon() {
	LIVESNAP_INDEX_MEMORY=256 bg_start setpriv --bounding-set="$UNIT_BOUNDING" --no-new-privs "$LIVESNAPD" \
		--config "$TEST_TMP/livesnap.json"
	DAEMON_PID=$BG_PID
	wait_until 10 "livesnapd on the bus" busctl status org.livesnap1 >/dev/null 2>&1
}
daemon_alive() { kill -0 "$DAEMON_PID" 2>/dev/null; }
# Runs the CLI as user nobody.
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }

# ---- no daemon: a clear message ----
expect_exit 1 "$LIVESNAP" list
grep -q "livesnapd is not running" "$TEST_TMP/err" || die "no clear message without a daemon: $(cat "$TEST_TMP/err")"

start_daemon
[[ $(stat -c %a "$STORE") == 700 ]] || die "the store is not mode 0700"

# ---- the daemon's own sandbox (livesnapd(8), SECURITY) ----
# status_is PID FIELD VALUE WHAT: /proc/PID/status has FIELD: VALUE.
status_is() {
	local got
	got=$(awk -v k="$2:" '$1 == k { print $2 }' /proc/"$1"/status)
	[[ $got == "$3" ]] || die "$4: $2 is '$got', expected '$3'"
}
# CAP_CHOWN (0) and CAP_FOWNER (3); CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19) and CAP_SYS_ADMIN (21).
BUS_CAPS=0000000000000009
WORKER_CAPS=0000000000280004
mapfile -t children < <(pgrep -P "$DAEMON_PID")
((${#children[@]} == 1)) || die "livesnapd should have one child, the spawner; it has: ${children[*]}"
SPAWNER=${children[0]}
status_is "$DAEMON_PID" Seccomp 2 "the bus-facing process"
status_is "$DAEMON_PID" Seccomp_filters 1 "the bus-facing process"
status_is "$DAEMON_PID" NoNewPrivs 1 "the bus-facing process"
for f in CapEff CapPrm; do
	status_is "$DAEMON_PID" $f $BUS_CAPS "the bus-facing process"
	status_is "$SPAWNER" $f $WORKER_CAPS "the spawner"
done
# (sandbox.sh checks the bounding set shrinks too where the daemon holds CAP_SETPCAP.)
status_is "$DAEMON_PID" CapBnd "$UNIT_CAPS" "the bus-facing process"
for f in CapInh CapAmb; do
	status_is "$DAEMON_PID" $f 0000000000000000 "the bus-facing process"
	status_is "$SPAWNER" $f 0000000000000000 "the spawner"
done
status_is "$SPAWNER" Seccomp 0 "the spawner"
log "sandbox: bus-facing process filtered with CapEff $BUS_CAPS, spawner unfiltered with CapEff $WORKER_CAPS"

# ---- introspection ----
busctl introspect org.livesnap1 /org/livesnap1 >"$TEST_TMP/introspect"
for member in .Checkpoint .ListCheckpoints .GetCheckpoint .Export .Delete .ListJobs .CancelJob \
	.CheckpointAdded .CheckpointRemoved .JobRemoved; do
	grep -q "^\\$member " "$TEST_TMP/introspect" || die "introspection lacks org.livesnap1.Manager$member"
done
log "introspection lists every Manager member"

# ---- a checkpoint of the sweep victim, checked for one cut per sweep ----
victim_start victim-sweep
SWEEP=$VICTIM_PID
SWEEP_DIR=$VICTIM_DIR
"$LIVESNAP" checkpoint "$SWEEP" --label "sweep test" --wait --json >"$TEST_TMP/cp.json" ||
	die "checkpoint --wait failed"
ID=$(jq -er .id "$TEST_TMP/cp.json")
jq -e '.freeze_us > 0 and .pages_saved > 0' "$TEST_TMP/cp.json" >/dev/null || die "checkpoint --json lacks figures"
[[ $(stat -c '%a %U' "$STORE/$ID.lsnap") == "600 root" ]] || die "checkpoint file is not 0600 root"
entries=$(index_entries "$STORE/$ID.lsnap")
((entries > 16)) || die "the checkpoint's index has $entries entries: the worker's writer never spilled it"
# Export through the daemon (the CLI passes it a file descriptor), as an image and as a core.
"$LIVESNAP" export "$ID" --format image -o "$TEST_TMP/exported.lsnap" || die "export of $ID as an image failed"
cmp -s "$TEST_TMP/exported.lsnap" "$STORE/$ID.lsnap" || die "the exported image differs from the stored one"
"$LIVESNAP" export "$ID" --format core -o "$TEST_TMP/exported.core" || die "export of $ID as a core failed"
readelf -h "$TEST_TMP/exported.core" | grep -q "CORE (Core file)" || die "the exported core is not an ELF core"
out=$TEST_TMP/check
mkdir "$out"
cp "$SWEEP_DIR/layout" "$out/"
cat_layout "$TEST_TMP/exported.lsnap" "$out"
victim_check victim-sweep "$out"
assert_victim_ok "$SWEEP" "$SWEEP_DIR"
"$LIVESNAP" show "$ID" --json >"$TEST_TMP/show.json"
jq -e --arg id "$ID" '.Id == $id and .Label == "sweep test"' "$TEST_TMP/show.json" >/dev/null ||
	die "show does not describe the checkpoint"
# The worker reads these for the record (the bus-facing process may not read another's /proc/PID/exe).
jq -e '(.Exe | endswith("/victim-sweep")) and (.CommandLine | contains("victim-sweep"))' \
	"$TEST_TMP/show.json" >/dev/null || die "the record lacks the target's exe or command line: $(cat "$TEST_TMP/show.json")"
log "checkpoint $ID through the daemon is point-in-time"

# ---- rights ----
expect_exit 1 as_nobody "$LIVESNAP" checkpoint "$SWEEP" --wait
grep -q "may not checkpoint" "$TEST_TMP/err" || die "nobody was not refused root's process: $(cat "$TEST_TMP/err")"
as_nobody "$LIVESNAP" list --json | jq -e 'length == 0' >/dev/null || die "nobody sees root's checkpoints"
expect_exit 1 as_nobody "$LIVESNAP" export "$ID" -o "$TEST_TMP/stolen.core"
[[ ! -e $TEST_TMP/stolen.core ]] || die "a refused export left a file"
expect_exit 1 as_nobody "$LIVESNAP" delete "$ID"
grep -q "no checkpoint" "$TEST_TMP/err" || die "nobody could address root's checkpoint"
VICTIM_USER=nobody victim_start victim-sweep
MINE=$VICTIM_PID
as_nobody "$LIVESNAP" checkpoint "$MINE" --wait --json >"$TEST_TMP/mine.json" || die "nobody was refused its own process"
MINE_ID=$(jq -er .id "$TEST_TMP/mine.json")
[[ $(stat -c '%a %U' "$STORE/$MINE_ID.lsnap") == "600 nobody" ]] || die "nobody's checkpoint is not 0600 nobody"
as_nobody "$LIVESNAP" list --json | jq -e --arg id "$MINE_ID" 'length == 1 and .[0].id == $id' >/dev/null ||
	die "nobody does not see exactly its own checkpoint"
assert_victim_ok "$MINE" "$VICTIM_DIR"
log "rights: refused root's process, served its own, sees only its own"

# ---- bad arguments: named errors ----
expect_exit 1 busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager Checkpoint 'ua{sv}' 0 0
grep -q "invalid PID" "$TEST_TMP/err" || die "PID 0 not refused clearly"
expect_exit 1 busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager Checkpoint 'ua{sv}' 999999999 0
grep -qi "no such process\|invalid PID" "$TEST_TMP/err" || die "a missing PID not refused clearly"
TID=$(ls /proc/"$SWEEP"/task | grep -vx "$SWEEP" | head -n 1 || true)
if [[ -n $TID ]]; then
	expect_exit 1 busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager Checkpoint 'ua{sv}' "$TID" 0
	grep -q "is a thread" "$TEST_TMP/err" || die "a thread's TID not refused clearly: $(cat "$TEST_TMP/err")"
fi
expect_exit 1 busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager Checkpoint 'ua{sv}' "$SWEEP" 1 \
	buffer_size s big
grep -q "must be a uint64" "$TEST_TMP/err" || die "a bad option type not refused clearly"
expect_exit 2 "$LIVESNAP" checkpoint "$SWEEP" --label "a/b"
grep -q "invalid label" "$TEST_TMP/err" || die "a label with '/' not refused"
expect_exit 2 "$LIVESNAP" show "../../etc/passwd"
grep -q "invalid checkpoint id" "$TEST_TMP/err" || die "a bad id not refused"
expect_exit 1 "$LIVESNAP" show 0123456789abcdef
grep -q "no checkpoint" "$TEST_TMP/err" || die "an unknown id not refused"
expect_exit 2 "$LIVESNAP" checkpoint --unit "../x.service"
grep -q "invalid unit name" "$TEST_TMP/err" || die "a bad unit name not refused"
# No systemd on this private bus: CheckpointUnit must fail clearly, not hang.
expect_exit 1 timeout 20 "$LIVESNAP" checkpoint --unit nonexistent.service --wait
grep -qi "no such unit\|systemd" "$TEST_TMP/err" || die "CheckpointUnit without systemd: $(cat "$TEST_TMP/err")"
log "bad arguments get named errors"

# ---- a slow target for jobs that last (32 MiB/s over ~256 MiB) ----
victim_start victim-churn
SLOW=$VICTIM_PID
SLOW_DIR=$VICTIM_DIR

# limits: 2 jobs per user, the third refused
"$LIVESNAP" checkpoint "$SLOW" >/dev/null || die "job 1 refused"
expect_exit 1 "$LIVESNAP" checkpoint "$SLOW"
grep -q "being checkpointed" "$TEST_TMP/err" || die "a second job on the same PID was not refused as busy"
"$LIVESNAP" checkpoint "$SWEEP" >/dev/null || die "job 2 refused"
expect_exit 1 "$LIVESNAP" checkpoint "$MINE"
grep -q "too many checkpoint jobs" "$TEST_TMP/err" || die "a job past the limit was not refused"
log "job limits hold"

# cancel the slow one
JOB=$("$LIVESNAP" jobs --json | jq -er --argjson pid "$SLOW" '.[] | select(.pid == $pid) | .job')
"$LIVESNAP" cancel "$JOB" || die "cancel failed"
wait_until 20 "the jobs to end" bash -c "[[ \$('$LIVESNAP' jobs --json | jq length) == 0 ]]"
assert_victim_ok "$SLOW" "$SLOW_DIR"
log "cancel: job gone, target intact"

# a killed worker
"$LIVESNAP" checkpoint "$SLOW" >/dev/null
sleep 0.5
WORKER=$(pgrep -P "$SPAWNER" | head -n 1)
[[ -n $WORKER ]] || die "no worker process under livesnapd's spawner"
# A worker may suspend its target's seccomp filter: unfiltered, with the ptrace capabilities only.
status_is "$WORKER" Seccomp 0 "the worker"
status_is "$WORKER" CapEff $WORKER_CAPS "the worker"
kill -KILL "$WORKER"
wait_until 20 "the job to end" bash -c "[[ \$('$LIVESNAP' jobs --json | jq length) == 0 ]]"
daemon_alive || die "livesnapd died with its worker"
assert_victim_ok "$SLOW" "$SLOW_DIR"
log "killed worker: job failed, daemon alive, target intact"

# a killed daemon
n_before=$("$LIVESNAP" list --json | jq length)
"$LIVESNAP" checkpoint "$SLOW" >/dev/null
sleep 0.5
kill -KILL "$DAEMON_PID"
sleep 0.5
assert_victim_ok "$SLOW" "$SLOW_DIR"
gone() { [[ $(proc_state "$1") == "" || $(proc_state "$1") == Z ]]; }
wait_until 10 "the spawner to die with the daemon" gone "$SPAWNER"
start_daemon
n_after=$("$LIVESNAP" list --json | jq length)
((n_after == n_before)) || die "the store changed across a killed job and a restart ($n_before -> $n_after)"
"$LIVESNAP" show "$ID" >/dev/null || die "restart lost checkpoint $ID"
ls -A "$STORE" | grep -q '^\.' && die "a temporary file survived the restart: $(ls -A "$STORE")"
log "killed daemon: target intact, spawner gone; restart keeps the store"

# a killed spawner: no job can start or end any more, so the daemon stops, and says why
mapfile -t children < <(pgrep -P "$DAEMON_PID")
((${#children[@]} == 1)) || die "livesnapd should have one child, the spawner; it has: ${children[*]}"
kill -KILL "${children[0]}"
wait_until 10 "livesnapd to stop without its spawner" gone "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
((rc == 1)) || die "livesnapd exited $rc when its spawner was killed, expected 1"
start_daemon
log "killed spawner: the daemon stopped with status 1"

"$LIVESNAP" delete "$ID" || die "delete failed"
expect_exit 1 "$LIVESNAP" show "$ID"
[[ ! -e $STORE/$ID.lsnap ]] || die "delete left the image"

# a stopped daemon (SIGTERM) with a job running: the worker aborts cleanly, the spawner waits for it
"$LIVESNAP" checkpoint "$SLOW" >/dev/null
sleep 0.5
mapfile -t children < <(pgrep -P "$DAEMON_PID")
kill -TERM "$DAEMON_PID"
wait_until 30 "livesnapd to stop on SIGTERM" gone "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
((rc == 0)) || die "livesnapd exited $rc on SIGTERM, expected 0"
gone "${children[0]}" || die "the spawner outlived the daemon"
assert_victim_ok "$SLOW" "$SLOW_DIR"
if ls -A "$STORE" | grep -q '^\.'; then die "a temporary file survived a stop: $(ls -A "$STORE")"; fi
log "stopped daemon: the running job aborted, the target intact, nothing left in the store"

# ---- bad configurations: refused with file and line ----
printf '{\n  "store_dir": "/tmp/x",\n  "max_jobz": 3\n}\n' >"$TEST_TMP/bad.json"
expect_exit 1 "$LIVESNAPD" --config "$TEST_TMP/bad.json"
grep -q "bad.json:3: unknown key \"max_jobz\"" "$TEST_TMP/err" || die "bad config message: $(cat "$TEST_TMP/err")"
printf '{\n  "max_jobs": 3,\n  "rate_limit" "1M"\n}\n' >"$TEST_TMP/bad.json"
expect_exit 1 "$LIVESNAPD" --config "$TEST_TMP/bad.json"
grep -q "bad.json:3:" "$TEST_TMP/err" || die "syntax error message: $(cat "$TEST_TMP/err")"
log "bad configurations refused with file and line"
