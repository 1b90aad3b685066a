#!/usr/bin/env bash
# One livesnap dump of a loaded redis-server, as a timeline: livesnap's phases (LIVESNAP_DEBUG=1, each
# line stamped with CLOCK_MONOTONIC seconds) merged with every gap a PING client saw of TRACE_US or
# more (pingloop with PINGLOOP_TRACE_US), so each long gap can be put on a phase. This is how the
# prepare phase and the close of the userfaultfd were found to cause the long gaps (bench/README.md,
# "Page-table work from the target's CPU").
#
#   bench/redis/timeline.sh [GIB] [RUNS]
#
# Run as root after `make` and bench/redis/install-deps.sh. Starts its own redis-server on a unix
# socket, fills it to about GIB GiB (default 4) with the keys run.sh uses, then RUNS times (default 1):
# 3 s of SET load (loadgen, 8 connections, closed loop), one `livesnap dump` under that load, 2 s more.
# Each run prints the dump's JSON result, the load's and the pinger's window lines (as run.sh's) and
# the timeline. Anything in the environment reaches livesnap, so an A/B is, for example:
#   bench/redis/timeline.sh 4 1; LIVESNAP_NO_FOLLOW=1 bench/redis/timeline.sh 4 1
# or, alternating two builds on one filled Redis (each a build directory holding a livesnap, which
# may be a script that sets the environment and runs another), BUILD="build /tmp/old" timeline.sh 4 6.
# The load's replies per TICK_MS (500) and their longest latency are laid in too. The load is a closed
# loop (next SET when the reply comes) unless LOAD_RATE=N makes it open loop at N SET/s, latency then
# counted from when each SET was due, as in run.sh.
# KILL_AFTER=SECONDS kills each dump (SIGKILL) that long after it starts and follows the load 3 s more:
# what the kernel's clean-up of a killed dump (un-protecting everything at once) costs the target.
# Settings (environment): BUILD (default build; several, space-separated, are taken in turn), IMGDIR (/var/tmp), TRACE_US (50000), SCHED_TRACE (a
# file: record the scheduler with `perf sched record` over the dump and, for each gap, show where
# Redis's main thread spent it: running, runnable but waiting for a CPU (and what held the CPUs), or
# asleep).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
GIB=${1:-4}
RUNS=${2:-1}
read -r -a BUILDS <<<"${BUILD:-build}"
for i in "${!BUILDS[@]}"; do
	[[ ${BUILDS[i]} == /* ]] || BUILDS[i]=$TOP/${BUILDS[i]}
done
TRACE_US=${TRACE_US:-50000}
TICK_MS=${TICK_MS:-500}
VALUE_BYTES=512

die() { echo "timeline.sh: $*" >&2; exit 1; }
[[ $GIB =~ ^[0-9]+$ && $GIB -ge 1 && $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || die "usage: timeline.sh [GIB] [RUNS]"
((EUID == 0)) || die "run as root (livesnap dump needs it)"
for b in "${BUILDS[@]}"; do
	[[ -x $b/livesnap ]] || die "no $b/livesnap: run make first (or set BUILD)"
done
for c in redis-server redis-cli cc python3; do
	command -v "$c" >/dev/null || die "$c not found (bench/redis/install-deps.sh)"
done

W=$(mktemp -d "${IMGDIR:-/var/tmp}/livesnap-timeline.XXXXXX")
SOCK=$W/redis.sock
RPID=
cleanup() {
	[[ -n $RPID ]] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for prog in pingloop loadgen; do
	cc -std=gnu11 -O2 -Wall -o "$W/$prog" "$HERE/$prog.c" || die "cannot build $prog"
done

rcli() { redis-cli -s "$SOCK" "$@"; }
used() { rcli info memory | tr -d '\r' | sed -n 's/^used_memory://p'; }

redis-server --port 0 --unixsocket "$SOCK" --save '' --appendonly no --dir "$W" >"$W/redis.log" 2>&1 &
RPID=$!
for _ in $(seq 100); do rcli ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
rcli ping | grep -q PONG || die "redis-server did not start: $(tail -3 "$W/redis.log")"

# The key space and values of run.sh (its POPULATE script), so loadgen overwrites every key.
POPULATE=$(sed -n "/^POPULATE='/,/^return n1 - n0'/p" "$HERE/run.sh" | sed "1s/^POPULATE='//; \$s/'\$//")
[[ -n $POPULATE ]] || die "cannot find POPULATE in run.sh"
echo "filling redis-server to about $GIB GiB" >&2
m0=$(used)
rcli eval "$POPULATE" 0 0 200000 "$VALUE_BYTES" >/dev/null
m1=$(used)
KEYS=$(awk -v t=$((GIB << 30)) -v m0="$m0" -v m1="$m1" 'BEGIN { printf "%d", (t - m0) / ((m1 - m0) / 200000) }')
for ((n = 200000; n < KEYS; n += 500000)); do
	rcli eval "$POPULATE" 0 $n $((n + 500000 < KEYS ? n + 500000 : KEYS)) "$VALUE_BYTES" >/dev/null
done

for ((run = 1; run <= RUNS; run++)); do
	LIVESNAP=${BUILDS[(run - 1) % ${#BUILDS[@]}]}/livesnap
	rm -f "$W/load.ctl" "$W/ping.ctl"
	mkfifo "$W/load.ctl" "$W/ping.ctl"
	LOADGEN_TICK_MS=$TICK_MS "$W/loadgen" "$SOCK" 8 "$KEYS" "$VALUE_BYTES" "${LOAD_RATE:-0}" <"$W/load.ctl" >"$W/load.out" \
		2>"$W/ticks.out" &
	lpid=$!
	PINGLOOP_TRACE_US=$TRACE_US "$W/pingloop" "$SOCK" 100 <"$W/ping.ctl" >"$W/ping.out" 2>"$W/gaps.out" &
	ppid=$!
	exec {lfd}>"$W/load.ctl" {pfd}>"$W/ping.ctl"
	sleep 3
	echo "mark dump" >&"$lfd"
	echo "mark dump" >&"$pfd"
	spid=
	if [[ -n ${SCHED_TRACE:-} ]]; then
		perf sched record -k mono -o "$SCHED_TRACE" >/dev/null 2>&1 &
		spid=$!
		sleep 1
	fi
	rc=0
	LIVESNAP_DEBUG=1 "$LIVESNAP" dump "$RPID" -o "$W/image.lsnap" --json --no-progress \
		>"$W/dump.json" 2>"$W/debug.out" &
	dpid=$!
	if [[ -n ${KILL_AFTER:-} ]]; then
		# Kill the dump mid-way: the kernel gives the target its memory back when the userfaultfd's
		# last holder dies; the load's ticks after the kill show what that costs the target.
		sleep "$KILL_AFTER"
		python3 -c 'import time; print("livesnap-debug: [%.6f] killed with SIGKILL (KILL_AFTER)" % time.monotonic())' \
			>>"$W/debug.out"
		kill -KILL "$dpid" 2>/dev/null || true
	fi
	wait "$dpid" || rc=$?
	[[ -z ${KILL_AFTER:-} ]] || sleep 3 # the load's ticks through the kernel's clean-up
	echo "mark after" >&"$lfd"
	echo "mark after" >&"$pfd"
	if [[ -n $spid ]]; then kill -INT "$spid"; wait "$spid" || true; fi
	sleep 2
	echo quit >&"$lfd"
	echo quit >&"$pfd"
	exec {lfd}>&- {pfd}>&-
	wait "$lpid" "$ppid" || true
	rm -f "$W/image.lsnap"

	echo "# run $run of $RUNS: $GIB GiB, $KEYS keys, $LIVESNAP"
	((rc == 0)) || echo "livesnap dump exited $rc: $(grep -v '^livesnap-debug' "$W/debug.out" | tail -3)"
	cat "$W/dump.json"
	echo
	cat "$W/load.out" "$W/ping.out"
	# The freeze's steps (unstamped debug lines), on one line.
	sed -n 's/^livesnap-debug: \([^[].*\)/\1/p' "$W/debug.out" | tr -s ' ' | paste -sd';' | sed 's/^/freeze steps: /'
	# A gap is placed where it began.
	python3 - "$W/debug.out" "$W/gaps.out" "$W/ticks.out" <<'EOF'
import re, sys
ev = []
for line in open(sys.argv[1]):
    m = re.match(r'livesnap-debug: \[([0-9.]+)\] (.*)', line)
    if m:
        ev.append((float(m.group(1)), 'livesnap: ' + m.group(2)))
for line in open(sys.argv[2]):
    m = re.match(r'gap (\d+) ends ([0-9.]+)', line)
    if m:
        us = int(m.group(1))
        ev.append((float(m.group(2)) - us / 1e6, 'PING gap of %.0f ms begins' % (us / 1000)))
ticks = []
for line in open(sys.argv[3]):
    m = re.match(r'tick ([0-9.]+) n=(\d+) max_us=(\d+) over_1ms=(\d+)', line)
    if m:
        ticks.append((float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))))
for i in range(1, len(ticks)):
    t, n, mx, o1 = ticks[i]
    secs = t - ticks[i - 1][0]
    ev.append((t, 'load: %6.0f SET/s, longest %5.1f ms, %4d over 1 ms (to here)' % (n / secs, mx / 1000, o1)))
# From 1 s before the dump; times from its first line.
t0 = min((t for t, what in ev if what.startswith('livesnap')), default=0)
ev = sorted(x for x in ev if x[0] >= t0 - 1)
for t, what in ev:
    print('%8.3f s  %s' % (t - t0, what))
EOF
	if [[ -n ${SCHED_TRACE:-} ]]; then
		echo "# where redis-server's main thread spent each gap (ms)"
		perf sched timehist -i "$SCHED_TRACE" --state 2>/dev/null |
			python3 "$HERE/schedgaps.py" "$RPID" "$W/debug.out" "$W/gaps.out"
	fi
	echo
done
