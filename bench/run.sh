#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/run.sh: livesnap's benchmarks, each beside the alternative measured in the same run.
#
#   1. freeze time against process size (1, 4, 8 GiB; 4 KiB pages and THP; idle and a light write
#      load), beside the fork() pause of the same process;
#   2. the round trip of a write fault while a dump runs, beside the same writes with no dump;
#   3. snapshot throughput, beside the disk's sequential write rate (dd, fdatasync) and
#      process_vm_readv's read rate from the same target.
#
# Run as root from the source tree after `make` (or `make BUILD=dir` and BUILD=dir bench/run.sh).
# Markdown tables go to stdout, progress and raw per-run figures to stderr. Needs cc, jq, awk, dd and
# about 2 * (largest size) GiB free RAM and 8 GiB free on $IMGDIR. Takes about 10 minutes.
#
# Environment (defaults in brackets):
#   BUILD [build]            build directory holding livesnap
#   LIVESNAP [$BUILD/livesnap]
#   IMGDIR [/var/tmp]        where images are written (a real disk, not tmpfs); each is deleted at once
#   SIZES_GIB ["1 4 8"]      target sizes for benchmark 1
#   KINDS ["4k thp"]         page kinds for benchmark 1
#   LOADS ["idle write"]     target loads for benchmark 1
#   DUMPS [3]                livesnap dumps per point; FORKS [5] forks per point
#   LOAD_PAGES_PER_MS [16]   the write load: pages written (one word each) per 1 ms tick
#   LAT_RATE [200M]          --rate of the dump during benchmark 2
#   TP_GIB [4]               target size for benchmark 3
#   ONLY ["1 2 3"]           which benchmarks to run

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(dirname "$HERE")
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$TOP/$BUILD ;; esac
LIVESNAP=${LIVESNAP:-$BUILD/livesnap}
OUT=$BUILD/bench
IMGDIR=${IMGDIR:-/var/tmp}
SIZES_GIB=${SIZES_GIB:-"1 4 8"}
KINDS=${KINDS:-"4k thp"}
LOADS=${LOADS:-"idle write"}
DUMPS=${DUMPS:-3}
FORKS=${FORKS:-5}
LOAD_PAGES_PER_MS=${LOAD_PAGES_PER_MS:-16}
LAT_MIB=1024
LAT_RATE=${LAT_RATE:-200M}
LAT_STRIDE_KIB=64 # one write per 64 KiB: livesnap saves at most the 64 KiB around a faulting page
LAT_GAP_US=300
TP_GIB=${TP_GIB:-4}
ONLY=${ONLY:-"1 2 3"}
DUMP_TIMEOUT=${DUMP_TIMEOUT:-600}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
        log "error: $*"
        exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (ptrace and userfaultfd of another process)"
for c in cc jq awk dd sort; do
        command -v "$c" >/dev/null || die "needs $c"
done

WORK=$(mktemp -d "$IMGDIR/livesnap-bench.XXXXXX") || die "cannot create a directory in $IMGDIR"
IMG=$WORK/image.lsnap
TGT_PID=
cleanup() {
        trap - EXIT
        [[ -n ${TGT_PID:-} ]] && kill -KILL "$TGT_PID" 2>/dev/null
        rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$OUT"
cc -std=gnu11 -O2 -g -Wall -Wextra -pthread -o "$OUT/target" "$HERE/target.c" || die "cannot build target"
cc -std=gnu11 -O2 -g -Wall -Wextra -o "$OUT/pvr" "$HERE/pvr.c" || die "cannot build pvr"

# ---- statistics (numbers on stdin, one per line) ----
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# nearest-rank percentile: pct P
pct() { sort -g | awk -v p="$1" '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} i=int(NR*p/100); if (i<NR*p/100) i++; if (i<1) i=1; print a[i]}'; }
minmax() { sort -g | awk 'NR==1{mn=$1} {mx=$1} END {if (NR==0) print "nan"; else print mn "-" mx}'; }
fmt() { awk -v x="$1" -v d="${2:-1}" 'BEGIN {if (x=="nan"||x=="") print "-"; else printf "%.*f\n", d, x}'; }
# fmt_range "a-b" divisor decimals
fmt_range() { awk -v r="$1" -v s="$2" -v d="${3:-1}" 'BEGIN {if (r=="nan"||r=="") {print "-"; exit} split(r,a,"-"); printf "%.*f-%.*f\n", d, a[1]/s, d, a[2]/s}'; }

# ---- the target, driven through a coprocess ----
TGT_ADDR= TGT_LEN= TGT_HUGE=
target_start() { # MIB KIND
        coproc TGT { exec "$OUT/target" "$1" "$2" 2>>"$WORK/target.err"; }
        if ! read -r -t 600 REPLY <&"${TGT[0]}" || [[ $REPLY != ready* ]]; then
                die "target $1 MiB $2 did not start: ${REPLY:-} $(cat "$WORK/target.err")"
        fi
        TGT_ADDR=$(sed -n 's/.* addr=\([^ ]*\).*/\1/p' <<<"$REPLY")
        TGT_LEN=$(sed -n 's/.* len=\([^ ]*\).*/\1/p' <<<"$REPLY")
        TGT_HUGE=$(sed -n 's/.* anon_huge_kib=\([^ ]*\).*/\1/p' <<<"$REPLY")
}
# Sends one command, leaves the answer in REPLY. Never call it in $(...): the coprocess fds stay here.
tcmd() {
        echo "$1" >&"${TGT[1]}" || die "target gone (command '$1')"
        read -r -t "${2:-600}" REPLY <&"${TGT[0]}" || die "no answer from the target to '$1'"
        [[ $REPLY != error* ]] || die "target: '$1': $REPLY"
}
target_stop() {
        local pid=$TGT_PID
        tcmd quit
        wait "$pid" 2>/dev/null
        TGT_PID=
}

# ---- livesnap ----
# dump PID [ARGS...]: runs one dump into $IMG, deletes the image; JSON in DUMP_JSON, or error in DUMP_ERR.
DUMP_JSON= DUMP_ERR=
dump() {
        local pid=$1 rc
        shift
        rm -f "$IMG"
        DUMP_JSON=$(timeout "$DUMP_TIMEOUT" "$LIVESNAP" dump "$pid" -o "$IMG" --json --no-progress "$@" 2>"$WORK/dump.err")
        rc=$?
        rm -f "$IMG"
        DUMP_ERR=
        if [[ $rc -ne 0 ]] || ! jq -e '.freeze_us and .elapsed_ms' >/dev/null 2>&1 <<<"$DUMP_JSON"; then
                DUMP_ERR="exit $rc$([[ $rc -eq 124 ]] && echo " (timed out after ${DUMP_TIMEOUT}s)"): $(tail -n 3 "$WORK/dump.err" | tr '\n' ' ')"
                log "dump of $pid failed: $DUMP_ERR"
                return 1
        fi
        [[ -d /proc/$pid ]] || die "the target died during a dump"
        log "dump: $(jq -c . <<<"$DUMP_JSON")"
}

# Does livesnap work at all here? A small dump decides; if not, its columns say why.
LS_OK=1 LS_WHY=
if [[ ! -x $LIVESNAP ]]; then
        LS_OK=0 LS_WHY="$LIVESNAP not built"
else
        target_start 64 4k
        if ! dump "$TGT_PID"; then
                LS_OK=0 LS_WHY="livesnap dump fails: ${DUMP_ERR}"
        fi
        target_stop
fi
[[ $LS_OK -eq 1 ]] || log "livesnap columns will not be measured: $LS_WHY"
NM="not measured"

THP_MODE=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)
MACHINE_LINE="$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), THP: $THP_MODE, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "# livesnap benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
IMGDEV=$(df --output=source "$IMGDIR" | tail -1)
IMGDRV=$(basename "$(readlink -f "/sys/class/block/$(basename "$IMGDEV")/device/driver" 2>/dev/null)" 2>/dev/null)
echo "Machine: $MACHINE_LINE. Images on $IMGDIR ($(df -T "$IMGDIR" | awk 'NR==2 {print $2 " on " $1}'), driver ${IMGDRV:-unknown})."
echo "livesnap: $LIVESNAP ($("$LIVESNAP" --version 2>/dev/null | head -1))$([[ $LS_OK -eq 1 ]] || echo " ($NM: $LS_WHY)")"
echo

# ---------------------------------------------------------------------------------------------------
# 1. Freeze time against size, beside fork()
# ---------------------------------------------------------------------------------------------------
bench_freeze() {
        local kind gib load rows=() f el img flt forks i
        for kind in $KINDS; do
                if [[ $kind == thp && $THP_MODE != *"[always]"* && $THP_MODE != *"[madvise]"* ]]; then
                        rows+=("| - | thp | - | THP disabled ($THP_MODE) | | | | | | | |")
                        continue
                fi
                for gib in $SIZES_GIB; do
                        log "benchmark 1: $gib GiB, $kind pages: filling"
                        target_start $((gib * 1024)) "$kind"
                        local huge_pct
                        huge_pct=$(awk -v h="$TGT_HUGE" -v l="$TGT_LEN" 'BEGIN {printf "%.0f%%", h*1024*100/l}')
                        log "pid $TGT_PID, $TGT_LEN bytes at $TGT_ADDR, THP-mapped: $huge_pct"
                        for load in $LOADS; do
                                if [[ $load == idle ]]; then tcmd "load idle"; else tcmd "load write $LOAD_PAGES_PER_MS"; fi
                                sleep 1
                                tcmd "fork $FORKS"
                                forks=(${REPLY#fork })
                                log "fork (us): ${forks[*]}"
                                local fz=() els=() imgs=() flts=() errs=
                                if [[ $LS_OK -eq 1 ]]; then
                                        for ((i = 0; i < DUMPS; i++)); do
                                                if dump "$TGT_PID"; then
                                                        fz+=("$(jq .freeze_us <<<"$DUMP_JSON")")
                                                        els+=("$(jq .elapsed_ms <<<"$DUMP_JSON")")
                                                        imgs+=("$(jq .image_bytes <<<"$DUMP_JSON")")
                                                        flts+=("$(jq .faults <<<"$DUMP_JSON")")
                                                else
                                                        errs="$DUMP_ERR"
                                                fi
                                        done
                                fi
                                local fmed fmm kmed kmm ratio lsf lsr lse lsi lsflt
                                kmed=$(printf '%s\n' "${forks[@]}" | median)
                                kmm=$(printf '%s\n' "${forks[@]}" | minmax)
                                if [[ ${#fz[@]} -gt 0 ]]; then
                                        fmed=$(printf '%s\n' "${fz[@]}" | median)
                                        fmm=$(printf '%s\n' "${fz[@]}" | minmax)
                                        lsf=$(fmt "$(awk -v x="$fmed" 'BEGIN {print x/1000}')" 2)
                                        lsr=$(fmt_range "$fmm" 1000 2)
                                        ratio=$(awk -v a="$fmed" -v b="$kmed" 'BEGIN {printf "%.2f", a/b}')
                                        lse=$(fmt "$(printf '%s\n' "${els[@]}" | median | awk '{print $1/1000}')" 1)
                                        lsi=$(fmt "$(printf '%s\n' "${imgs[@]}" | median | awk '{print $1/1073741824}')" 2)
                                        lsflt=$(printf '%s\n' "${flts[@]}" | median)
                                        [[ -z $errs ]] || lsflt="$lsflt (${#fz[@]}/$DUMPS dumps ok; failed: $errs)"
                                elif [[ $LS_OK -eq 1 ]]; then
                                        lsf="failed: $errs" lsr= ratio= lse= lsi= lsflt=
                                else
                                        lsf="$NM" lsr= ratio= lse= lsi= lsflt=
                                fi
                                local loadname=$load
                                [[ $load == idle ]] || loadname="write ${LOAD_PAGES_PER_MS} pages/ms"
                                rows+=("| $gib | $kind ($huge_pct THP) | $loadname | $lsf | $lsr | $(fmt "$(awk -v x="$kmed" 'BEGIN {print x/1000}')" 2) | $(fmt_range "$kmm" 1000 2) | $ratio | $lse | $lsi | $lsflt |")
                        done
                        target_stop
                done
        done
        echo "## 1. Freeze time against process size, beside fork()"
        echo
        echo "livesnap: freeze_us of $DUMPS dumps (median, min-max); fork: wall time of fork() in the target's"
        echo "main thread, the child exiting at once, $FORKS forks (median, min-max). Same process, same run."
        echo
        echo "| GiB | pages | load | livesnap freeze median (ms) | freeze min-max (ms) | fork median (ms) | fork min-max (ms) | freeze / fork | livesnap elapsed median (s) | image (GiB) | write faults (median) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
        printf '%s\n' "${rows[@]}"
        echo
}

# ---------------------------------------------------------------------------------------------------
# 2. Fault round trip
# ---------------------------------------------------------------------------------------------------
lat_row() { # NAME FILE ("START_US LATENCY_NS" per line)
        local f=$2 lat=$WORK/lat.col n nf nf10 med fmed fp90 fp99 fmax smed us
        if [[ ! -s $f ]]; then
                echo "| $1 | no data | | | | | | | | |"
                return
        fi
        awk '{print $2}' "$f" >"$lat"
        n=$(wc -l <"$lat")
        nf=$(awk '$1 > 1000' "$lat" | wc -l)
        nf10=$(awk '$1 > 10000' "$lat" | wc -l)
        med=$(median <"$lat")
        fmed=$(awk '$1 > 1000' "$lat" | median)
        fp90=$(awk '$1 > 1000' "$lat" | pct 90)
        fp99=$(awk '$1 > 1000' "$lat" | pct 99)
        fmax=$(awk '$1 > 1000' "$lat" | sort -g | tail -1)
        smed=$(awk '$1 <= 1000' "$lat" | median)
        us() { fmt "$(awk -v x="${1:-nan}" 'BEGIN {print (x=="nan")?x:x/1000}')" 1; }
        echo "| $1 | $n | $nf | $nf10 | $(us "$fmed") | $(us "$fp90") | $(us "$fp99") | $(us "$fmax") | $(fmt "$med" 0) | $(fmt "$smed" 0) |"
}

# lat_dump NAME FILE [DUMP ARGS...]: arms the probe, starts a dump, lets the freeze finish, then writes
# from the top down while the copier climbs from the bottom. Sets LAT_NOTE[NAME] and LAT_JSON[NAME].
declare -A LAT_NOTE LAT_JSON
lat_dump() {
        local name=$1 file=$2 dpid rc
        shift 2
        tcmd "lat $LAT_STRIDE_KIB $LAT_GAP_US $file"
        rm -f "$IMG"
        timeout "$DUMP_TIMEOUT" "$LIVESNAP" dump "$TGT_PID" -o "$IMG" --json --no-progress "$@" \
                >"$WORK/lat.json" 2>"$WORK/lat.err" &
        dpid=$!
        # Wait until livesnap has seized the target, then give the freeze 0.2 s (it takes 20-80 ms
        # at this size here); a write landing inside the freeze would count as one slow write.
        local i tracer=0
        for ((i = 0; i < 5000 && tracer == 0; i++)); do
                tracer=$(awk '/^TracerPid:/ {print $2}' "/proc/$TGT_PID/status" 2>/dev/null || echo 0)
                [[ $tracer -ne 0 ]] || sleep 0.002
        done
        sleep 0.2
        tcmd latgo
        wait "$dpid"
        rc=$?
        rm -f "$IMG"
        tcmd latwait
        LAT_JSON[$name]=$(jq -c . "$WORK/lat.json" 2>/dev/null)
        log "$name: $REPLY; dump exit $rc: ${LAT_JSON[$name]:-$(cat "$WORK/lat.err")}"
        [[ $rc -eq 0 ]] || LAT_NOTE[$name]="the dump failed (exit $rc: $(tail -n 3 "$WORK/lat.err" | tr '\n' ' '))"
}

bench_latency() {
        local base=$WORK/lat-base name
        log "benchmark 2: $LAT_MIB MiB, 4k pages"
        target_start "$LAT_MIB" 4k
        tcmd "load idle"
        # Without a dump: the same writes to the same pages.
        tcmd "lat $LAT_STRIDE_KIB $LAT_GAP_US $base"
        tcmd latgo
        tcmd latwait
        log "baseline: $REPLY"
        if [[ $LS_OK -eq 1 ]]; then
                lat_dump "during dump --rate $LAT_RATE" "$WORK/lat-rate" --rate "$LAT_RATE"
                lat_dump "during dump, no --rate (disk-bound)" "$WORK/lat-norate"
        fi
        target_stop

        echo "## 2. Write-fault round trip"
        echo
        echo "A thread of a $LAT_MIB MiB target (4 KiB pages) writes one word every $LAT_STRIDE_KIB KiB, from the top of the"
        echo "region down, one write every $LAT_GAP_US us, and times each write with CLOCK_MONOTONIC. The writes start"
        echo "0.2 s after livesnap has seized the target; the background copier climbs from the bottom, so the writes meet unsaved pages"
        echo "until the two cross. A write taking > 1 us counts as a fault (compare livesnap's own fault count below)."
        echo
        echo "| run | writes | writes > 1 us | of which > 10 us | median of writes > 1 us (us) | p90 (us) | p99 (us) | max (us) | median of all writes (ns) | median of writes <= 1 us (ns) |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        lat_row "no dump" "$base"
        if [[ $LS_OK -eq 1 ]]; then
                lat_row "during dump --rate $LAT_RATE${LAT_NOTE["during dump --rate $LAT_RATE"]:+ (${LAT_NOTE["during dump --rate $LAT_RATE"]})}" "$WORK/lat-rate"
                lat_row "during dump, no --rate (disk-bound)${LAT_NOTE["during dump, no --rate (disk-bound)"]:+ (${LAT_NOTE["during dump, no --rate (disk-bound)"]})}" "$WORK/lat-norate"
        else
                echo "| during dump | $NM: $LS_WHY | | | | | | | | |"
        fi
        echo
        if [[ $LS_OK -eq 1 ]]; then
                for name in "during dump --rate $LAT_RATE" "during dump, no --rate (disk-bound)"; do
                        [[ -n ${LAT_JSON[$name]:-} ]] || continue
                        echo "- $name: livesnap reported $(jq -r '"elapsed \(.elapsed_ms) ms, freeze \(.freeze_us) us, faults \(.faults), pages_faulted \(.pages_faulted), pages_saved \(.pages_saved), peak_buffer_bytes \(.peak_buffer_bytes), throttle_us \(.throttle_us)"' <<<"${LAT_JSON[$name]}")."
                done
                echo
        fi
}

# ---------------------------------------------------------------------------------------------------
# 3. Throughput
# ---------------------------------------------------------------------------------------------------
# disk_rate: writes TP_GIB GiB of zeros to IMGDIR with dd conv=fdatasync; prints MB/s
disk_rate() {
        local ddfile=$WORK/dd.out sec
        rm -f "$WORK/dd"
        sync
        dd if=/dev/zero of="$WORK/dd" bs=1M count=$((TP_GIB * 1024)) conv=fdatasync 2>"$ddfile"
        rm -f "$WORK/dd"
        log "dd: $(tail -1 "$ddfile")"
        sec=$(sed -n 's/.* copied, \([0-9.]*\) s.*/\1/p' "$ddfile")
        awk -v s="$sec" -v b=$((TP_GIB << 30)) 'BEGIN {if (s > 0) printf "%.0f\n", b/s/1e6; else print "nan"}'
}

bench_throughput() {
        local i pv=() ls=() lsi=() peak=() thr=() dd1 dd2
        log "benchmark 3: $TP_GIB GiB idle target, 4k pages"
        target_start $((TP_GIB * 1024)) 4k
        tcmd "load idle"
        dd1=$(disk_rate)
        for i in 1 2 3; do
                local out
                out=$("$OUT/pvr" "$TGT_PID" "$TGT_ADDR" "$TGT_LEN" 1024) || die "pvr failed"
                log "process_vm_readv: $out"
                pv+=("$(sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' <<<"$out")")
        done
        if [[ $LS_OK -eq 1 ]]; then
                for i in 1 2 3; do
                        if dump "$TGT_PID"; then
                                ls+=("$(jq '.pages_saved * 4096 / .elapsed_ms / 1000' <<<"$DUMP_JSON")")
                                lsi+=("$(jq '.image_bytes / .elapsed_ms / 1000' <<<"$DUMP_JSON")")
                                peak+=("$(jq '.peak_buffer_bytes' <<<"$DUMP_JSON")")
                                thr+=("$(jq '.throttle_us' <<<"$DUMP_JSON")")
                        fi
                done
        fi
        dd2=$(disk_rate)
        target_stop

        echo "## 3. Throughput ($TP_GIB GiB idle target, 4 KiB pages; MB = 10^6 bytes)"
        echo
        echo "In this order, with the target alive throughout: dd, process_vm_readv x3, livesnap dump x3, dd."
        echo
        echo "| what | rate (MB/s) | runs | notes |"
        echo "|---|---|---|---|"
        echo "| disk: dd bs=1M conv=fdatasync, $TP_GIB GiB to $IMGDIR | $(fmt "$(printf '%s\n' "$dd1" "$dd2" | median)" 0) | 2 | before: $dd1, after: $dd2 |"
        echo "| process_vm_readv, 1 MiB chunks, reused buffer | $(fmt "$(printf '%s\n' "${pv[@]}" | median)" 0) | ${#pv[@]} | all: ${pv[*]} |"
        if [[ ${#ls[@]} -gt 0 ]]; then
                echo "| livesnap dump (pages_saved x 4 KiB / elapsed) | $(fmt "$(printf '%s\n' "${ls[@]}" | median)" 0) | ${#ls[@]} | all: $(printf '%.0f ' "${ls[@]}"); image bytes / elapsed: $(fmt "$(printf '%s\n' "${lsi[@]}" | median)" 0); peak buffer $(printf '%s\n' "${peak[@]}" | median | awk '{printf "%.0f MiB", $1/1048576}'); throttle_us (median) $(printf '%s\n' "${thr[@]}" | median) |"
        else
                echo "| livesnap dump | $NM | | ${LS_WHY:-every dump failed: $DUMP_ERR} |"
        fi
        echo
}

T0=$(date +%s)
for b in $ONLY; do
        case $b in
        1) bench_freeze ;;
        2) bench_latency ;;
        3) bench_throughput ;;
        esac
done
echo "Total run time: $(($(date +%s) - T0)) s."
