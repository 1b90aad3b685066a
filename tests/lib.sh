# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
# Shared helpers for tests/integration/*.sh. Source it after `set -euo pipefail`.
#
# Environment (set by tests/run.sh; defaults let a test be run by hand from the source tree):
#   BUILD     build directory (default: build)
#   LIVESNAP  the CLI (default: $BUILD/livesnap)
#   VICTIMS   victim programs (default: $BUILD/tests/victims)
#
# Every test gets a private temporary directory $TEST_TMP. Processes started with victim_start or
# bg_start, and any PID passed to cleanup_add, are SIGKILLed on exit, commands given to at_cleanup
# run, and $TEST_TMP is removed. Do not set a trap on EXIT of your own (use at_cleanup).
# Exit status 77 means skipped; the last line printed says why.

BUILD=${BUILD:-build}
LIVESNAP=${LIVESNAP:-$BUILD/livesnap}
VICTIMS=${VICTIMS:-$BUILD/tests/victims}
TEST_NAME=$(basename "$0" .sh)

CLEANUP_PIDS=()
TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/livesnap-$TEST_NAME.XXXXXX")
chmod 0755 "$TEST_TMP"

TEST_START_NS=$(date +%s%N)
log() { printf '%s [%5.1fs]: %s\n' "$TEST_NAME" "$((($(date +%s%N) - TEST_START_NS) / 1000000))e-3" "$*" >&2; }

die() {
        printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
        exit 1
}

# soft_fail MSG: records a failure and goes on, so that one run reports every problem it can see;
# soft_failures_check (call it at the end) fails the test if any was recorded.
SOFT_FAILURES=()
soft_fail() {
        printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
        SOFT_FAILURES+=("$*")
}

soft_failures_check() {
        ((${#SOFT_FAILURES[@]} == 0)) && return 0
        local f
        printf '%s: %d failure(s):\n' "$TEST_NAME" "${#SOFT_FAILURES[@]}" >&2
        for f in "${SOFT_FAILURES[@]}"; do
                printf '  - %s\n' "$f" >&2
        done
        exit 1
}

skip() {
        printf '%s: SKIP: %s\n' "$TEST_NAME" "$*" >&2
        # The runner reads the reason from the last line of the output.
        printf '%s\n' "$*"
        exit 77
}

cleanup_add() { CLEANUP_PIDS+=("$@"); }

# at_cleanup CMD...: runs CMD on exit, after the processes are killed and before $TEST_TMP is removed
# (e.g. to unmount something under it). Use this rather than a trap of your own: a test's
# `trap ... EXIT` replaces this file's, and its processes and $TEST_TMP would be left behind.
CLEANUP_CMDS=()
at_cleanup() { CLEANUP_CMDS+=("$*"); }

ppid_of() {
        local stat
        stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 0
        stat=${stat##*) }
        stat=${stat#* }
        echo "${stat%% *}"
}

_cleanup() {
        local rc=$? pid cmd
        trap - EXIT
        set +e
        for pid in "${CLEANUP_PIDS[@]}"; do
                # Only our own children: a PID reaped earlier may belong to someone else by now.
                [[ $(ppid_of "$pid") == "$BASHPID" ]] && kill -KILL "$pid" 2>/dev/null
        done
        for pid in "${CLEANUP_PIDS[@]}"; do
                { wait "$pid"; } 2>/dev/null
        done
        for cmd in "${CLEANUP_CMDS[@]}"; do
                eval "$cmd"
        done
        if ((rc != 0)) && [[ -n ${KEEP_TMP:-} ]]; then
                echo "$TEST_NAME: kept $TEST_TMP" >&2
        else
                rm -rf "$TEST_TMP"
        fi
        exit $rc
}
trap _cleanup EXIT
# Turn termination (e.g. by the runner's timeout) into an exit, so the EXIT trap cleans up.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# ---- prerequisites ----

require_root() {
        [[ $(id -u) -eq 0 ]] || skip "needs root (ptrace and userfaultfd of other processes)"
}

require_cmd() {
        local c
        for c in "$@"; do
                command -v "$c" >/dev/null 2>&1 || skip "needs the '$c' command (not installed)"
        done
}

require_build() {
        [[ -x $LIVESNAP ]] || die "$LIVESNAP not built"
        [[ -d $VICTIMS ]] || die "$VICTIMS not built"
}

# Checks that livesnap can dump at all here (root, a kernel with userfaultfd); skips otherwise.
require_uffd_wp() {
        require_root
        [[ -e /proc/sys/vm/unprivileged_userfaultfd || -e /dev/userfaultfd ]] ||
                skip "kernel without userfaultfd (no /proc/sys/vm/unprivileged_userfaultfd)"
}

# ---- waiting ----

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 20 ms.
wait_until() {
        local secs=$1 what=$2
        shift 2
        local end=$((SECONDS + secs + 1)) i=0
        while ! "$@"; do
                # SECONDS has 1 s resolution; count iterations as well.
                i=$((i + 1))
                if ((SECONDS >= end || i >= secs * 50)); then
                        die "timed out after ${secs}s waiting for $what"
                fi
                sleep 0.02
        done
}

# wait_for_file PATH [SECONDS] [PID]: waits for PATH to exist; fails early if PID died.
wait_for_file() {
        local path=$1 secs=${2:-30} pid=${3:-} i=0
        while [[ ! -e $path ]]; do
                if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
                        die "process $pid exited while waiting for $path"
                fi
                i=$((i + 1))
                ((i <= secs * 50)) || die "timed out after ${secs}s waiting for $path"
                sleep 0.02
        done
}

# file_appears PATH SECONDS: returns 0 once PATH exists, 1 after SECONDS without it.
file_appears() {
        local path=$1 secs=$2 i=0
        while [[ ! -e $path ]]; do
                i=$((i + 1))
                ((i <= secs * 50)) || return 1
                sleep 0.02
        done
}

# ---- processes ----

# bg_start CMD...: starts CMD in the background, registered for cleanup; sets BG_PID.
bg_start() {
        "$@" &
        BG_PID=$!
        cleanup_add "$BG_PID"
}

# kill_wait PID: SIGKILL a process this shell started and reap it (quietly).
kill_wait() {
        [[ $(ppid_of "$1") == "$BASHPID" ]] || die "kill_wait: $1 is not a child of the test"
        kill -KILL "$1" 2>/dev/null || true
        { wait "$1"; } 2>/dev/null || true
}

# victim_start NAME [ARGS...]: starts $VICTIMS/NAME with a fresh directory, waits for it to be ready.
# Sets VICTIM_PID and VICTIM_DIR. With VICTIM_USER=name set, runs the victim as that user; with
# VICTIM_NICE=N, at that nice level (busy victims leave this 2-CPU machine room for the tools).
victim_start() {
        local name=$1
        shift
        VICTIM_DIR=$(mktemp -d "$TEST_TMP/$name.XXXXXX")
        chmod 0777 "$VICTIM_DIR"
        local -a cmd=("$VICTIMS/$name" "$VICTIM_DIR" "$@")
        if [[ -n ${VICTIM_USER:-} ]]; then
                local uid gid
                uid=$(id -u "$VICTIM_USER")
                gid=$(id -g "$VICTIM_USER")
                cmd=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all "${cmd[@]}")
        fi
        if [[ -n ${VICTIM_NICE:-} ]]; then
                cmd=(nice -n "$VICTIM_NICE" "${cmd[@]}")
        fi
        "${cmd[@]}" >"$VICTIM_DIR/stdout" 2>"$VICTIM_DIR/stderr" &
        VICTIM_PID=$!
        cleanup_add "$VICTIM_PID"
        local i=0
        while [[ ! -e $VICTIM_DIR/ready ]]; do
                if ! kill -0 "$VICTIM_PID" 2>/dev/null || [[ -e $VICTIM_DIR/error ]]; then
                        cat "$VICTIM_DIR/stderr" >&2 || true
                        die "victim $name exited before it was ready"
                fi
                i=$((i + 1))
                ((i <= 30 * 50)) || die "victim $name not ready after 30 s"
                sleep 0.02
        done
        log "started $name as PID $VICTIM_PID ($VICTIM_DIR)"
}

# layout_get DIR NAME FIELD: FIELD is addr or len (addr printed as 0x-hex, len as decimal).
layout_get() {
        local dir=$1 name=$2 field=$3 n a l
        while read -r n a l; do
                if [[ $n == "$name" ]]; then
                        case $field in
                        addr) echo "$a" ;;
                        len) echo "$l" ;;
                        esac
                        return 0
                fi
        done <"$dir/layout"
        die "no '$name' in $dir/layout"
}

# thread_states PID: one state letter per thread.
thread_states() {
        local pid=$1 f stat
        for f in /proc/"$pid"/task/*/stat; do
                stat=$(cat "$f" 2>/dev/null) || continue
                stat=${stat##*) }
                echo "${stat%% *}"
        done
}

# proc_state PID: the state letter of PID's main thread, or nothing if it is gone.
proc_state() {
        local stat
        stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 0
        stat=${stat##*) }
        echo "${stat%% *}"
}

# assert_alive PID [WHAT]: the process exists and is not a zombie. If it died and is this shell's
# child, says how (e.g. "killed by SIGSEGV").
# dump_stopped PID LOG: the dump PID, run with LIVESNAP_TEST_STOP_AT, stopped itself (State T); dies,
# showing LOG, if it ended instead.
dump_stopped() {
        local st
        st=$(proc_state "$1")
        [[ -n $st && $st != Z ]] || die "livesnap dump exited instead of stopping: $(cat "$2" 2>/dev/null)"
        [[ $st == T ]]
}

assert_alive() {
        local pid=$1 what=${2:-process $1} st rc=0 how
        st=$(proc_state "$pid")
        [[ -n $st && $st != Z && $st != X ]] && return 0
        { wait "$pid"; } 2>/dev/null || rc=$?
        if ((rc == 127)); then
                how="not a child of the test"
        elif ((rc > 128)); then
                how="killed by SIG$(kill -l $((rc - 128)))"
        else
                how="exit status $rc"
        fi
        die "$what died ($how)"
}

# assert_not_stopped PID: no thread is in a stop (t: ptrace stop, T: job control stop).
assert_not_stopped() {
        local pid=$1 what=${2:-process $1} f stat st tid
        for f in /proc/"$pid"/task/*/stat; do
                stat=$(cat "$f" 2>/dev/null) || continue
                tid=${stat%% *}
                stat=${stat##*) }
                st=${stat%% *}
                [[ $st != t && $st != T ]] || die "$what: thread $tid is stopped (state $st)"
        done
}

# assert_not_traced PID: TracerPid is 0 (livesnap detached).
assert_not_traced() {
        local pid=$1 what=${2:-process $1} tracer
        tracer=$(awk '/^TracerPid:/ {print $2}' /proc/"$pid"/status 2>/dev/null || true)
        [[ -n $tracer ]] || assert_alive "$pid" "$what"
        [[ $tracer == 0 ]] || die "$what is still traced by PID $tracer"
}

# assert_no_uffd_wait PID: no thread blocked in a userfaultfd fault.
assert_no_uffd_wait() {
        local pid=$1 what=${2:-process $1} t w
        for t in /proc/"$pid"/task/*; do
                w=$(cat "$t/wchan" 2>/dev/null || true)
                if [[ $w == *userfault* ]]; then
                        die "$what: thread ${t##*/} is blocked in $w"
                fi
                if [[ -r $t/stack ]] && grep -q userfault "$t/stack" 2>/dev/null; then
                        die "$what: thread ${t##*/} is blocked in userfaultfd: $(tr '\n' ' ' <"$t/stack")"
                fi
        done
}

# read_mem PID ADDR LEN: LEN bytes of PID's memory at ADDR on stdout (through /proc/PID/mem).
read_mem() {
        dd if=/proc/"$1"/mem bs="$3" count=1 iflag=skip_bytes skip=$(($2)) status=none
}

# index_entries IMAGE: the number of entries in IMAGE's index, as its trailer (the last 48 bytes; see
# DiskTrailer in lib/image.c) records it.
index_entries() {
        tail -c 48 "$1" | od -An -tu8 -j32 -N8 | tr -d ' '
}

# pages_present PID ADDR NPAGES: how many of the NPAGES pages at ADDR are present in PID's page tables
# (bit 63 of /proc/PID/pagemap).
pages_present() {
        python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
pid, addr, n = int(sys.argv[1]), int(sys.argv[2], 0), int(sys.argv[3])
with open("/proc/%d/pagemap" % pid, "rb") as f:
    f.seek(addr // 4096 * 8)
    data = f.read(n * 8)
print(sum(1 for (v,) in struct.iter_unpack("Q", data) if v >> 63))
PY
}

# read_counters PID DIR: the "progress" counters of a victim (see victim.h), one per line.
read_counters() {
        local pid=$1 dir=$2 addr len
        addr=$(layout_get "$dir" progress addr)
        len=$(layout_get "$dir" progress len)
        read_mem "$pid" "$addr" "$len" | od -An -v -tu8 -w8 | tr -d ' '
}

# assert_progressing PID DIR [SECONDS]: every progress counter advances within SECONDS (0.5 s
# default; up to 5 s of grace so a loaded machine does not fail the test).
assert_progressing() {
        local pid=$1 dir=$2 secs=${3:-0.5} what=${4:-victim $1}
        local -a c0 c1
        mapfile -t c0 < <(read_counters "$pid" "$dir")
        ((${#c0[@]} > 0)) || die "$what: cannot read its progress counters"
        sleep "$secs"
        local tries=0 i stuck
        while :; do
                mapfile -t c1 < <(read_counters "$pid" "$dir")
                stuck=()
                for i in "${!c0[@]}"; do
                        if [[ -z ${c1[i]:-} ]] || ((c1[i] <= c0[i])); then
                                stuck+=("$i")
                        fi
                done
                ((${#stuck[@]} == 0)) && return 0
                tries=$((tries + 1))
                if ((tries > 10)); then
                        die "$what: progress counter(s) ${stuck[*]} stuck (before: ${c0[*]}; after: ${c1[*]}); thread states: $(thread_states "$pid" | tr '\n' ' ')"
                fi
                sleep 0.5
        done
}

# assert_victim_ok PID DIR: alive, not stopped, not traced, not blocked on uffd, progressing, no
# DIR/error.
assert_victim_ok() {
        local pid=$1 dir=$2 what=${3:-victim $1}
        if [[ ! -e /proc/$pid || $(proc_state "$pid") == Z ]]; then
                [[ ! -s $dir/stderr ]] || log "$what's stderr: $(tail -n 5 "$dir/stderr")"
                [[ ! -e $dir/error ]] || log "$what's error: $(cat "$dir/error")"
                # The kernel's word on a crash names the thread: TIDs follow the PID closely.
                local tids
                tids=$(seq -s '|' "$pid" $((pid + 32)))
                dmesg 2>/dev/null | grep -E "\[($tids)\]: " | tail -n 3 | sed "s/^/$TEST_NAME: dmesg: /" >&2 || true
        fi
        assert_alive "$pid" "$what"
        [[ ! -e $dir/error ]] || die "$what reported an error: $(cat "$dir/error")"
        assert_not_stopped "$pid" "$what"
        assert_not_traced "$pid" "$what"
        assert_progressing "$pid" "$dir" 0.5 "$what"
        assert_no_uffd_wait "$pid" "$what"
        [[ ! -e $dir/error ]] || die "$what reported an error: $(cat "$dir/error")"
}

# ---- livesnap ----

# dump PID IMAGE [OPTIONS...]: runs livesnap dump --json, fails the test unless it succeeds.
# The JSON result goes to IMAGE.json, stderr to IMAGE.err.
dump() {
        local pid=$1 image=$2 rc=0
        shift 2
        "$LIVESNAP" dump "$pid" -o "$image" --json "$@" >"$image.json" 2>"$image.err" || rc=$?
        if ((rc != 0)); then
                cat "$image.err" >&2
                die "livesnap dump $pid $* exited $rc"
        fi
        [[ -s $image ]] || die "livesnap dump $pid exited 0 but $image is missing or empty"
        jq -e . "$image.json" >/dev/null || die "livesnap dump --json printed invalid JSON: $(cat "$image.json")"
        log "dump $pid $*: $(jq -c '{freeze_us, elapsed_ms, pages_saved, pages_zero, pages_discarded, pages_unsaved, pages_faulted, faults, threads, peak_buffer_bytes, throttle_us}' "$image.json")"

        # The buffer bounds the engine's memory (livesnap(1): default 64M, at least 4M).
        local buffer=64M prev="" a limit peak
        for a in "$@"; do
                [[ $prev == --buffer ]] && buffer=$a
                [[ $a == --buffer=* ]] && buffer=${a#--buffer=}
                prev=$a
        done
        limit=$(size_to_bytes "$buffer")
        ((limit >= 4 << 20)) || limit=$((4 << 20))
        peak=$(json_field "$image.json" peak_buffer_bytes)
        ((peak <= limit)) || die "peak_buffer_bytes=$peak exceeds the buffer limit of $limit bytes (--buffer $buffer)"
}

# size_to_bytes SIZE: 64M -> 67108864 (suffixes K, M, G, T).
size_to_bytes() {
        local n=${1%[KMGTkmgt]} shift=0
        case ${1: -1} in
        K | k) shift=10 ;;
        M | m) shift=20 ;;
        G | g) shift=30 ;;
        T | t) shift=40 ;;
        esac
        echo $((n << shift))
}

# json_field FILE.json KEY: a top-level number of the dump result.
json_field() { jq -er ".$2" "$1"; }

# jq definitions: `num` turns an address given as a number or a "0x..." string into a number;
# `hex` formats a number as 0x-hex.
JQ_DEFS='def num: if type == "string" then (ascii_downcase | ltrimstr("0x") | explode |
        map(if . >= 97 then . - 87 else . - 48 end) | reduce .[] as $d (0; . * 16 + $d)) else . end;
def hex: "0x" + ([recurse(if . >= 16 then (. / 16 | floor) else empty end) | . % 16] | reverse |
        map("0123456789abcdef"[.:. + 1]) | join(""));'

# jqf FILE FILTER [jq args...]: jq -e with JQ_DEFS, on FILE.
jqf() {
        local file=$1 filter=$2
        shift 2
        jq -e "$@" "$JQ_DEFS $filter" "$file"
}

# cat_layout IMAGE DIR [NAMES...]: for each layout entry (or each of NAMES), livesnap cat into
# DIR/NAME.bin; fails the test if cat fails.
cat_layout() {
        local image=$1 dir=$2 n a l rc
        shift 2
        while read -r n a l; do
                if (($# > 0)); then
                        local want=0 x
                        for x in "$@"; do [[ $x == "$n" ]] && want=1; done
                        ((want)) || continue
                fi
                rc=0
                "$LIVESNAP" cat "$image" "$a" "$l" >"$dir/$n.bin" 2>"$dir/$n.err" || rc=$?
                ((rc == 0)) || die "livesnap cat $image $a $l ('$n') exited $rc: $(cat "$dir/$n.err")"
        done <"$dir/layout"
}

# victim_check NAME DIR: runs the victim's check mode on DIR/*.bin.
victim_check() {
        local name=$1 dir=$2 rc=0
        "$VICTIMS/$name" --check "$dir" >"$dir/check.out" 2>&1 || rc=$?
        cat "$dir/check.out" >&2
        ((rc == 0)) || die "$name --check found the image inconsistent (see above)"
}

# verify IMAGE: livesnap verify exits 0.
verify_ok() {
        local rc=0
        "$LIVESNAP" verify "$1" >"$1.verify" 2>&1 || rc=$?
        ((rc == 0)) || die "livesnap verify $1 exited $rc: $(cat "$1.verify")"
}

# expect_exit STATUS CMD...: runs CMD (stdout to $TEST_TMP/out, stderr to $TEST_TMP/err), fails the
# test unless it exits with STATUS.
expect_exit() {
        local want=$1 rc=0
        shift
        "$@" >"$TEST_TMP/out" 2>"$TEST_TMP/err" || rc=$?
        if ((rc != want)); then
                die "'$*' exited $rc, expected $want; stderr: $(head -c 2000 "$TEST_TMP/err")"
        fi
}

# ---- livesnapd on a private bus ----

# private_bus_start: a dbus-daemon of type system on $TEST_TMP/bus.socket whose policy is the one
# bus.sh uses (method calls denied by default) plus the project's own systemd/org.livesnap1.conf;
# exports DBUS_SYSTEM_BUS_ADDRESS, so the CLI and livesnapd talk over it.
private_bus_start() {
        local top
        top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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
        chmod 0777 "$TEST_TMP/bus.socket"
        export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$TEST_TMP/bus.socket
}

# livesnapd_start CONFIG: starts ${LIVESNAPD:-$BUILD/livesnapd} with CONFIG on the private bus, waits
# until it owns its name; sets DAEMON_PID and SPAWNER_PID (its only child, which forks the workers).
livesnapd_start() {
        local daemon=${LIVESNAPD:-$BUILD/livesnapd}
        local -a children
        [[ -x $daemon ]] || die "$daemon not built"
        bg_start "$daemon" --config "$1"
        DAEMON_PID=$BG_PID
        wait_until 10 "livesnapd on the bus" busctl status org.livesnap1 >/dev/null 2>&1
        mapfile -t children < <(pgrep -P "$DAEMON_PID")
        ((${#children[@]} == 1)) || die "livesnapd should have one child, the spawner; it has: ${children[*]}"
        SPAWNER_PID=${children[0]}
}
