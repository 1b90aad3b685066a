#!/usr/bin/env bash
# Issue 7's Redis benchmark: a BGSAVE, a livesnap checkpoint and (where it fits in time) gdb's gcore
# of the same redis-server, holding 1, 4 and 8 GiB of data under a SET load over its whole key
# space, side by side: the pause (BGSAVE's fork against livesnap's freeze, and what a client sees),
# the extra memory, the load's latency and throughput during each snapshot, total time and copy
# rates; then, with the load stopped, DEBUG DIGEST before and after a checkpoint.
#
#   bench/redis/run.sh [--sizes 1,4,8] [--quick] [--no-gcore] [--update-readme]
#
# Run as root from anywhere, after `make` and bench/redis/install-deps.sh. Progress goes to stderr;
# the tables to bench/redis/results-DATE.md (results-DATE-quick.md with --quick), the plot to
# bench/redis/pause.png, and with --update-readme to the "Redis" section of bench/README.md (between
# its <!-- redis:begin --> and <!-- redis:end --> markers, appended if missing). See README.md here.
#
# Settings (environment): BUILD (default build), IMGDIR (/var/tmp: work directory, RDB, images and
# cores; a real disk), VALUE_BYTES (512), LOAD_CONNS (8), LOAD_RATE (0: closed loop; N: N SET/s open
# loop), PING_SLEEP_US (100), BASE_SECS (8; --quick 3), GCORE_MAX_GIB (4: gcore stops Redis for its
# whole dump, about 4 s per GiB here, so it is skipped above this size), DD_GIB (2; --quick 1),
# ROUNDS (3; --quick 1): BGSAVE and livesnap are taken this many times at each size, under the same
# load, in turn (even rounds livesnap first); the load's percentiles are compared by their medians
# over the rounds, since a single window of either is noisy on a shared machine. The other tables are
# of the first round. SPAN_SECS (10): the load is also measured over the same SPAN_SECS from the start
# of each snapshot, whichever tool, so that the two compare the same amount of traffic (each snapshot
# then starts at least SPAN_SECS after the one before).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
cd "$TOP"
BUILD=${BUILD:-build}
LIVESNAP=$TOP/$BUILD/livesnap
[[ $BUILD == /* ]] && LIVESNAP=$BUILD/livesnap
IMGDIR=${IMGDIR:-/var/tmp}
VALUE_BYTES=${VALUE_BYTES:-512}
LOAD_CONNS=${LOAD_CONNS:-8}
LOAD_RATE=${LOAD_RATE:-0}
PING_SLEEP_US=${PING_SLEEP_US:-100}
GCORE_MAX_GIB=${GCORE_MAX_GIB:-4}
SETTLE_SECS=2
SPAN_SECS=${SPAN_SECS:-10}

SIZES= QUICK=0 GCORE=1 UPDATE_README=0
while [[ $# -gt 0 ]]; do
	case $1 in
	--sizes) SIZES=$2; shift ;;
	--sizes=*) SIZES=${1#*=} ;;
	--quick) QUICK=1 ;;
	--no-gcore) GCORE=0 ;;
	--update-readme) UPDATE_README=1 ;;
	-h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
if [[ $QUICK -eq 1 ]]; then
	SIZES=${SIZES:-1}
	BASE_SECS=${BASE_SECS:-3}
	DD_GIB=${DD_GIB:-1}
	ROUNDS=${ROUNDS:-1}
else
	SIZES=${SIZES:-1,4,8}
	BASE_SECS=${BASE_SECS:-8}
	DD_GIB=${DD_GIB:-2}
	ROUNDS=${ROUNDS:-3}
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: ROUNDS must be a whole number >= 1" >&2; exit 2; }
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
for s in "${SIZE_LIST[@]}"; do
	[[ $s =~ ^[0-9]+$ && $s -ge 1 ]] || { echo "run.sh: --sizes takes whole GiB, e.g. 1,4,8" >&2; exit 2; }
done

log() { echo "[$(date -u +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (livesnap and gcore attach to redis-server)"
for c in redis-server redis-cli redis-benchmark jq cc awk dd; do
	command -v "$c" >/dev/null || die "needs $c (bench/redis/install-deps.sh)"
done
[[ -x /usr/bin/time ]] || die "needs /usr/bin/time (bench/redis/install-deps.sh)"
[[ -x $LIVESNAP ]] || die "no $LIVESNAP: run make first (or set BUILD)"
if [[ $GCORE -eq 1 ]] && ! command -v gcore >/dev/null; then
	log "no gcore (gdb): the gcore column is skipped"
	GCORE=0
fi
HAVE_GNUPLOT=1
command -v gnuplot >/dev/null || { HAVE_GNUPLOT=0; log "no gnuplot: no plot"; }

W=$(mktemp -d "$IMGDIR/livesnap-redis.XXXXXX")
SOCK=$W/redis.sock
RPID= LPID= PPID2= LFD= PFD=
cleanup() {
	[[ -n $LFD ]] && { exec {LFD}>&-; } 2>/dev/null
	[[ -n $PFD ]] && { exec {PFD}>&-; } 2>/dev/null
	local p
	for p in $LPID $PPID2 $RPID; do
		kill "$p" 2>/dev/null || true
	done
	for p in $LPID $PPID2 $RPID; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for prog in pingloop loadgen vmread; do
	cc -std=gnu11 -O2 -Wall -o "$W/$prog" "$HERE/$prog.c" || die "cannot build $prog"
done

now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
ms() { [[ -n ${1:-} && $1 != - ]] && awk -v us="$1" 'BEGIN { printf (us >= 100000 ? "%.0f" : "%.1f"), us / 1000 }' || echo -; }
mib() { [[ -n ${1:-} && $1 != - ]] && awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }' || echo -; }
gib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 2^30 }'; }
rcli() { redis-cli -s "$SOCK" "$@"; }
info_field() { rcli info "$1" | tr -d '\r' | sed -n "s/^$2://p"; }
# win FILE NAME KEY: a field of one window line of pingloop's or loadgen's output
win() { awk -v n="$2" -v k="$3" '$1 == n { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$1"; }

# ---------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------
MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
SWAP_KB=$(awk '/^SwapTotal:/ { print $2 }' /proc/meminfo)
THP=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)
FS=$(df -T "$IMGDIR" | awk 'NR == 2 { print $2 " on " $1 }')
OS=$(. /etc/os-release && echo "$PRETTY_NAME")
REDIS_VER=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
COMMIT=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$TOP" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " plus uncommitted work" || true)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_START=$(date -u '+%Y-%m-%d %H:%M')
T0=$(date +%s)
log "work directory $W; sizes ${SIZE_LIST[*]} GiB; load average $LOAD_START"

disk_rate() { # MB/s of dd writing DD_GIB GiB to IMGDIR with fdatasync
	local out
	sync
	out=$(dd if=/dev/zero of="$W/dd" bs=1M count=$((DD_GIB * 1024)) conv=fdatasync 2>&1 | tail -1)
	rm -f "$W/dd"
	log "dd: $out"
	sed -n 's/.* copied, \([0-9.]*\) s.*/\1/p' <<<"$out" |
		awk -v b=$((DD_GIB << 30)) '{ printf "%.0f\n", b / $1 / 1e6 }'
}
DD1=$(disk_rate)

# ---------------------------------------------------------------------------------------------------
# One size
# ---------------------------------------------------------------------------------------------------
start_redis() {
	rm -f "$SOCK" "$W/dump.rdb"
	redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" --appendonly no \
		--dir "$W" --dbfilename dump.rdb --enable-debug-command yes --daemonize no \
		--logfile "$W/redis.log" --stop-writes-on-bgsave-error no >/dev/null 2>&1 &
	RPID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		rcli ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.1
	done
	die "redis-server did not start: $(tail -3 "$W/redis.log" 2>/dev/null)"
}
stop_redis() {
	kill "$RPID" 2>/dev/null || true
	wait "$RPID" 2>/dev/null || true
	RPID=
	rm -f "$W/dump.rdb"
}

# Keys key:%012d (redis-benchmark's -r format, which loadgen also uses) with VALUE_BYTES of
# incompressible-looking values: the index, then a slice of a random pool.
POPULATE='local n0, n1, vlen = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = {}
for j = 1, 65536 do t[j] = string.char(math.random(33, 126)) end
local pool = table.concat(t)
for i = n0, n1 - 1 do
  local off = (i * 7919) % (65536 - vlen) + 1
  redis.call("SET", string.format("key:%012d", i), string.format("%012d", i) .. pool:sub(off, off + vlen - 13))
end
return n1 - n0'
populate() { # GIB: fills used_memory to about GIB GiB; sets KEYS
	local target=$(($1 << 30)) first=200000 m0 m1 n batch=500000
	m0=$(info_field memory used_memory)
	rcli eval "$POPULATE" 0 0 $first "$VALUE_BYTES" >/dev/null
	m1=$(info_field memory used_memory)
	KEYS=$(awk -v t="$target" -v m0="$m0" -v m1="$m1" -v f=$first 'BEGIN { printf "%d", (t - m0) / ((m1 - m0) / f) }')
	for ((n = first; n < KEYS; n += batch)); do
		rcli eval "$POPULATE" 0 $n $((n + batch < KEYS ? n + batch : KEYS)) "$VALUE_BYTES" >/dev/null
	done
	[[ $(rcli dbsize) -eq $KEYS ]] || die "populate: dbsize $(rcli dbsize), expected $KEYS"
}

start_load() { # GIB
	rm -f "$W/load.ctl" "$W/ping.ctl"
	mkfifo "$W/load.ctl" "$W/ping.ctl"
	"$W/loadgen" "$SOCK" "$LOAD_CONNS" "$KEYS" "$VALUE_BYTES" "$LOAD_RATE" <"$W/load.ctl" >"$W/load-$1.out" &
	LPID=$!
	"$W/pingloop" "$SOCK" "$PING_SLEEP_US" <"$W/ping.ctl" >"$W/ping-$1.out" &
	PPID2=$!
	exec {LFD}>"$W/load.ctl" {PFD}>"$W/ping.ctl"
}
mark() { echo "mark $1" >&"$LFD"; echo "mark $1" >&"$PFD"; }
# span NAME: the load's window of SPAN_SECS from now, beside the marked ones (loadgen's "span")
span() { echo "span $1 $SPAN_SECS" >&"$LFD"; }
# span_wait T0: the span started at T0 (now_ns) is over, so the next one does not overlap it
span_wait() { local left; left=$(awk -v t0="$1" -v now="$(now_ns)" -v s="$SPAN_SECS" 'BEGIN { l = s - (now - t0) / 1e9 + 0.05; print (l > 0 ? l : 0) }'); sleep "$left"; }
stop_load() {
	echo quit >&"$LFD"
	echo quit >&"$PFD"
	exec {LFD}>&- {PFD}>&-
	LFD= PFD=
	wait "$LPID" || log "loadgen exited with $?"
	wait "$PPID2" || log "pingloop exited with $?"
	LPID= PPID2=
}

# Per size, indexed by GiB
declare -A KEYS_AT USED RSS VMR RB_RPS RB_P99 FORK BG_S BG_COW BG_COWPEAK RDB BG_ST
declare -A LS_FREEZE LS_S LS_WALL LS_PEAKBUF LS_RSS LS_IMG LS_PAGES LS_FAULTS LS_THROTTLE LS_ERR
declare -A GC_S GC_SIZE GC_NOTE DG_BEFORE DG_AFTER DG_FREEZE MARKER VERIFY

run_size() {
	local g=$1 t0 t1 i inprog cow peak lsjson
	log "== $g GiB =="
	local avail
	avail=$(awk '/^MemAvailable:/ { print int($2 / 1048576) }' /proc/meminfo)
	if ((avail < g * 2 + 2)); then
		log "only $avail GiB available: $g GiB needs about $((g * 2 + 2)) (BGSAVE's copy-on-write can double it); skipped"
		KEYS_AT[$g]="skipped: $avail GiB available"
		return
	fi
	start_redis
	log "populating"
	t0=$(now_ns)
	populate "$g"
	t1=$(now_ns)
	KEYS_AT[$g]=$KEYS
	USED[$g]=$(info_field memory used_memory)
	RSS[$g]=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$RPID/status")
	log "$KEYS keys in $(secs "$t0" "$t1") s: used_memory $(mib "${USED[$g]}") MiB, RSS $(mib "${RSS[$g]}") MiB"
	VMR[$g]=$("$W/vmread" "$RPID" 1024 | sed -n 's/.*mb_per_s=\([0-9]*\).*/\1/p')
	log "process_vm_readv of redis-server: ${VMR[$g]} MB/s"
	if [[ $QUICK -eq 0 ]]; then
		# The same load with the standard tool, for reference (values of "x", same size and keys).
		local csv
		csv=$(redis-benchmark -s "$SOCK" -t set -r "$KEYS" -d "$VALUE_BYTES" -c "$LOAD_CONNS" -n 300000 --csv 2>/dev/null | tail -1)
		RB_RPS[$g]=$(awk -F'"' '{ printf "%.0f", $4 }' <<<"$csv")
		RB_P99[$g]=$(awk -F'"' '{ printf "%.0f", $14 * 1000 }' <<<"$csv")
		log "redis-benchmark: $csv"
	fi

	start_load "$g"
	mark warmup
	sleep 2
	mark base
	sleep "$BASE_SECS"

	log "BGSAVE"
	mark bgsave
	span bgsave-span
	t0=$(now_ns)
	rcli bgsave >/dev/null
	peak=0
	while :; do
		inprog=$(info_field persistence rdb_bgsave_in_progress)
		cow=$(info_field persistence current_cow_peak)
		((cow > peak)) && peak=$cow
		[[ $inprog == 0 ]] && break
		sleep 0.05
	done
	t1=$(now_ns)
	mark settle1
	FORK[$g]=$(info_field stats latest_fork_usec)
	BG_S[$g]=$(secs "$t0" "$t1")
	BG_COW[$g]=$(info_field persistence rdb_last_cow_size)
	BG_COWPEAK[$g]=$peak
	BG_ST[$g]=$(info_field persistence rdb_last_bgsave_status)
	RDB[$g]=$(stat -c %s "$W/dump.rdb" 2>/dev/null || echo 0)
	rm -f "$W/dump.rdb"
	log "BGSAVE: fork ${FORK[$g]} us, ${BG_S[$g]} s, cow ${BG_COW[$g]} (peak seen $peak), rdb ${RDB[$g]} bytes, ${BG_ST[$g]}"
	sleep "$SETTLE_SECS"
	span_wait "$t0"

	log "livesnap dump"
	mark livesnap
	span livesnap-span
	t0=$(now_ns)
	if /usr/bin/time -f %M -o "$W/time.out" "$LIVESNAP" dump "$RPID" -o "$W/img.lsnap" --json --no-progress \
		>"$W/dump.json" 2>"$W/dump.err"; then
		t1=$(now_ns)
		mark settle2
		lsjson=$(cat "$W/dump.json")
		log "livesnap: $lsjson; max RSS $(tail -1 "$W/time.out") KiB"
		LS_FREEZE[$g]=$(jq .freeze_us <<<"$lsjson")
		LS_S[$g]=$(jq '.elapsed_ms / 1000' <<<"$lsjson")
		LS_WALL[$g]=$(secs "$t0" "$t1")
		LS_PEAKBUF[$g]=$(jq .peak_buffer_bytes <<<"$lsjson")
		LS_IMG[$g]=$(jq .image_bytes <<<"$lsjson")
		LS_PAGES[$g]=$(jq .pages_saved <<<"$lsjson")
		LS_FAULTS[$g]=$(jq '"\(.faults) (\(.pages_faulted) pages)"' -r <<<"$lsjson")
		LS_THROTTLE[$g]=$(jq .throttle_us <<<"$lsjson")
		LS_RSS[$g]=$(($(tail -1 "$W/time.out") * 1024))
	else
		mark settle2
		LS_ERR[$g]=$(tail -3 "$W/dump.err" | tr '\n' ' ')
		log "livesnap dump failed: ${LS_ERR[$g]}"
	fi
	rm -f "$W/img.lsnap"
	sleep "$SETTLE_SECS"
	span_wait "$t0"

	if [[ $GCORE -eq 1 && $g -le $GCORE_MAX_GIB ]]; then
		log "gcore"
		mark gcore
		t0=$(now_ns)
		gcore -o "$W/core" "$RPID" >/dev/null 2>"$W/gcore.err" || GC_NOTE[$g]="gcore failed: $(tail -1 "$W/gcore.err")"
		t1=$(now_ns)
		mark settle3
		GC_S[$g]=$(secs "$t0" "$t1")
		GC_SIZE[$g]=$(stat -c %s "$W/core.$RPID" 2>/dev/null || echo 0)
		rm -f "$W/core.$RPID"
		log "gcore: ${GC_S[$g]} s"
		sleep "$SETTLE_SECS"
	elif [[ $GCORE -eq 1 ]]; then
		GC_NOTE[$g]="skipped above $GCORE_MAX_GIB GiB (stops Redis ~4 s/GiB)"
	else
		GC_NOTE[$g]="not run (--no-gcore)"
	fi

	mark base2
	sleep "$BASE_SECS"

	# Rounds 2..ROUNDS: BGSAVE and livesnap again, windows bgsave-K and livesnap-K.
	local k tool
	for ((k = 2; k <= ROUNDS; k++)); do
		for tool in $( ((k % 2 == 0)) && echo "livesnap bgsave" || echo "bgsave livesnap"); do
			log "round $k: $tool"
			mark "$tool-$k"
			span "$tool-span-$k"
			t0=$(now_ns)
			if [[ $tool == bgsave ]]; then
				rcli bgsave >/dev/null
				while [[ $(info_field persistence rdb_bgsave_in_progress) != 0 ]]; do
					sleep 0.05
				done
				mark "settle-$k-$tool"
				info_field stats latest_fork_usec >"$W/fork-$g-$k"
				rm -f "$W/dump.rdb"
			else
				"$LIVESNAP" dump "$RPID" -o "$W/img.lsnap" --json --no-progress >"$W/dump-$g-$k.json" 2>"$W/dump-$k.err" ||
					log "livesnap dump (round $k) failed: $(tail -2 "$W/dump-$k.err" | tr '\n' ' ')"
				mark "settle-$k-$tool"
				rm -f "$W/img.lsnap"
			fi
			sleep "$SETTLE_SECS"
			span_wait "$t0"
		done
	done
	stop_load

	# Consistency, with the load stopped: DEBUG DIGEST before and after a checkpoint. During that
	# dump, after the freeze, a marker value is overwritten in place (SETRANGE, same length): the
	# image must hold the old bytes and not the new ones. "After the freeze" is made certain with
	# livesnap's test hook: LIVESNAP_TEST_STOP_AT=copying stops the dump (SIGSTOP) as it enters
	# the copy phase, the target already resumed; the overwrite is sent then (its write fault waits
	# for the dump), and the dump is continued.
	log "DEBUG DIGEST, checkpoint, DEBUG DIGEST"
	local tok_b tok_a val dpid spid stopped=0
	tok_b="LSNAP-BEFORE-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')-"
	tok_a="LSNAP-AFTER--$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')-"
	val=$(printf "$tok_b%.0s" {1..256})
	rcli set lsnap:marker "$val" >/dev/null
	DG_BEFORE[$g]=$(rcli debug digest)
	LIVESNAP_TEST_STOP_AT=copying "$LIVESNAP" dump "$RPID" -o "$W/img.lsnap" --json --no-progress >"$W/dg.json" 2>"$W/dg.err" &
	dpid=$!
	for ((i = 0; i < 3000 && stopped == 0; i++)); do
		[[ $(awk '{ print $3 }' "/proc/$dpid/stat" 2>/dev/null) == T ]] && stopped=1 || sleep 0.01
	done
	rcli setrange lsnap:marker 0 "$(printf "$tok_a%.0s" {1..256})" >/dev/null &
	spid=$!
	sleep 0.2
	kill -CONT "$dpid" 2>/dev/null || true
	wait "$spid" || true
	if wait "$dpid"; then
		DG_FREEZE[$g]=$(jq .freeze_us "$W/dg.json")
		local nb na
		# Counted in the ELF core made from the image, where each mapping's memory is in one piece:
		# in the image itself a token that straddles two pages saved apart (a fault's window and the
		# copier's) is in two sections, and a grep there misses it.
		if "$LIVESNAP" export "$W/img.lsnap" -o "$W/img.core" >/dev/null 2>"$W/export.err"; then
			nb=$( (grep -a -o -F "$tok_b" "$W/img.core" || true) | wc -l)
			na=$( (grep -a -o -F "$tok_a" "$W/img.core" || true) | wc -l)
			MARKER[$g]="old value: $nb copies of its token in the image, new value: $na"
		else
			MARKER[$g]="export failed: $(tail -1 "$W/export.err")"
		fi
		rm -f "$W/img.core"
		[[ $stopped -eq 1 ]] || MARKER[$g]+=" (the dump was not seen entering its copy phase: not a test)"
		VERIFY[$g]=$("$LIVESNAP" verify "$W/img.lsnap" >/dev/null 2>"$W/verify.err" && echo ok || echo "failed: $(tail -1 "$W/verify.err")")
	else
		MARKER[$g]="dump failed: $(tail -2 "$W/dg.err" | tr '\n' ' ')"
		VERIFY[$g]=-
	fi
	rm -f "$W/img.lsnap"
	rcli setrange lsnap:marker 0 "$val" >/dev/null # back to the value the first digest saw
	DG_AFTER[$g]=$(rcli debug digest)
	log "digest ${DG_BEFORE[$g]} / ${DG_AFTER[$g]}; marker: ${MARKER[$g]}; verify: ${VERIFY[$g]}"
	stop_redis
}

for g in "${SIZE_LIST[@]}"; do
	run_size "$g"
done
DD2=$(disk_rate)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
TOTAL=$(($(date +%s) - T0))
log "done in $TOTAL s"

# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------
DATE=$(date -u +%Y-%m-%d)
RESULTS=$HERE/results-$DATE.md
CMD="bench/redis/run.sh --sizes $SIZES"
if [[ $QUICK -eq 1 ]]; then
	RESULTS=$HERE/results-$DATE-quick.md
	CMD+=" --quick"
fi
[[ $GCORE -eq 1 ]] || CMD+=" --no-gcore"
measured=()
for g in "${SIZE_LIST[@]}"; do [[ ${KEYS_AT[$g]} =~ ^[0-9]+$ ]] && measured+=("$g"); done

# rounds FILE TOOL SUFFIX KEY: KEY of the load window of TOOL (bgsave, livesnap) in every round, in
# order, space-separated: TOOL (round 1) or TOOL-K, with SUFFIX ("" or -span) after TOOL
rounds() {
	local k out=
	for ((k = 1; k <= ROUNDS; k++)); do
		out+="$(win "$1" "$2$3$( ((k > 1)) && echo "-$k")" "$4") "
	done
	echo "${out% }"
}
tool_name() { [[ $1 == bgsave ]] && echo BGSAVE || echo livesnap; }
# tail_cells FILE TOOL SUFFIX: the table cells "p99 by round | **median** | p99.9 by round | median"
tail_cells() {
	local p99s p999s
	p99s=$(rounds "$1" "$2" "$3" p99_us)
	p999s=$(rounds "$1" "$2" "$3" p999_us)
	echo "$p99s | **$(median $p99s)** | $p999s | $(median $p999s)"
}
median() { printf '%s\n' "$@" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%+.0f%%", (a / b - 1) * 100 }'; }
report() {
	local g lo po
	echo "Machine: $(nproc) vCPUs (\"$MODEL\"), $MEM_GIB GiB RAM, $([[ $SWAP_KB -eq 0 ]] && echo "no swap" || echo "swap $((SWAP_KB >> 20)) GiB"); Linux $(uname -r) ($(uname -m)), $OS."
	echo "THP \`enabled\`: \`$THP\` (redis-server's \`disable-thp yes\` only acts on \`always\`: its heap is 4 KiB pages)."
	echo "RDB, images and cores in \`$IMGDIR\` ($FS); disk (dd ${DD_GIB} GiB, fdatasync): $DD1 MB/s before, $DD2 MB/s after."
	echo "Redis $REDIS_VER (Debian), livesnap at commit $COMMIT$DIRTY. Run $DATE_START UTC, $TOTAL s, load average $LOAD_START at the start, $LOAD_END at the end."
	echo "Command: \`$CMD\`. Load: loadgen, $LOAD_CONNS connections, $([[ $LOAD_RATE == 0 ]] && echo "closed loop (next SET when the reply comes)" || echo "open loop at $LOAD_RATE SET/s (latency from when each SET was due)"), SET of $VALUE_BYTES-byte values over every populated key (key:%012d, uniform)."
	echo
	echo "### Pause: what the target and a client see (ms)"
	echo
	echo "Fork: Redis's \`latest_fork_usec\`. Freeze: livesnap's \`freeze_us\`. Client gap: the longest time between two"
	echo "replies of a PING loop (one PING at a time, ${PING_SLEEP_US} us apart) during the snapshot; without a snapshot for comparison."
	echo
	echo "| GiB | keys | used_memory (MiB) | BGSAVE fork | BGSAVE client gap | livesnap freeze | livesnap client gap | gcore client gap | no snapshot: client gap |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for g in "${SIZE_LIST[@]}"; do
		if [[ ! ${KEYS_AT[$g]} =~ ^[0-9]+$ ]]; then
			echo "| $g | ${KEYS_AT[$g]} | | | | | | | |"
			continue
		fi
		po=$W/ping-$g.out
		echo "| $g | ${KEYS_AT[$g]} | $(mib "${USED[$g]}") | $(ms "${FORK[$g]}") | $(ms "$(win "$po" bgsave max_gap_us)") | $(ms "${LS_FREEZE[$g]:-}")${LS_ERR[$g]:+ failed: ${LS_ERR[$g]}} | $(ms "$(win "$po" livesnap max_gap_us)") | $([[ -n ${GC_S[$g]:-} ]] && ms "$(win "$po" gcore max_gap_us)" || echo "${GC_NOTE[$g]}") | $(ms "$(win "$po" base max_gap_us)"), $(ms "$(win "$po" base2 max_gap_us)") |"
	done
	echo
	echo "### Extra memory (MiB)"
	echo
	echo "BGSAVE: the child's copy-on-write, as Redis reports it (\`rdb_last_cow_size\`: at the end; \`current_cow_peak\`: the"
	echo "largest value seen polling INFO every 50 ms). livesnap: its page buffer's peak (\`peak_buffer_bytes\`, \`--buffer\` default"
	echo "64M) and the largest RSS of the \`livesnap dump\` process (\`/usr/bin/time\` %M). Neither counts the page cache of the file written."
	echo
	echo "| GiB | Redis RSS | BGSAVE COW at end | BGSAVE COW peak seen | livesnap buffer peak | livesnap process max RSS |"
	echo "|---|---|---|---|---|---|"
	for g in "${measured[@]}"; do
		echo "| $g | $(mib "${RSS[$g]}") | $(mib "${BG_COW[$g]}") | $(mib "${BG_COWPEAK[$g]}") | $(mib "${LS_PEAKBUF[$g]:-}") | $(mib "${LS_RSS[$g]:-}") |"
	done
	echo
	echo "### The load during each window"
	echo
	echo "SET latency (us) and throughput while each snapshot ran, against windows of ${BASE_SECS} s without one (before the"
	echo "snapshots and after them). Windows are cut by marks sent to the load generator when each tool starts and returns."
	[[ $QUICK -eq 1 ]] || echo "redis-benchmark's own figures for the same load without a snapshot are in the last column of the first row of each size."
	echo
	echo "The SETs slower than 1 ms and than 10 ms are counted over the whole window: how many replies were late, whatever"
	echo "the window's length (a percentile of a short window and of a long one compare different amounts of traffic)."
	echo
	echo "| GiB | window | secs | SET/s | vs no snapshot | p50 | p99 | p99.9 | max | SETs > 1 ms | SETs > 10 ms | errors | PINGs | redis-benchmark SET/s, p99 (us) |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	for g in "${measured[@]}"; do
		lo=$W/load-$g.out po=$W/ping-$g.out
		local base_rps w
		base_rps=$(awk -v a="$(win "$lo" base rps)" -v b="$(win "$lo" base2 rps)" 'BEGIN { print (a + b) / 2 }')
		for w in base bgsave livesnap gcore base2; do
			[[ -n $(win "$lo" $w n) ]] || continue
			local label=$w
			case $w in base) label="no snapshot (before)" ;; base2) label="no snapshot (after)" ;; bgsave) label=BGSAVE ;; esac
			local rb=
			[[ $w == base && -n ${RB_RPS[$g]:-} ]] && rb="${RB_RPS[$g]}, ${RB_P99[$g]}"
			echo "| $g | $label | $(win "$lo" $w secs) | $(win "$lo" $w rps) | $(pct "$(win "$lo" $w rps)" "$base_rps") | $(win "$lo" $w p50_us) | $(win "$lo" $w p99_us) | $(win "$lo" $w p999_us) | $(win "$lo" $w max_us) | $(win "$lo" $w over_1ms) | $(win "$lo" $w over_10ms) | $(win "$lo" $w errors) | $(win "$po" $w pings) | $rb |"
		done
	done
	if ((ROUNDS > 1)); then
		echo
		echo "#### The load over $ROUNDS rounds"
		echo
		echo "Each size took BGSAVE and livesnap $ROUNDS times under the same load, in turn (round 1 as above, BGSAVE first;"
		echo "even rounds livesnap first). Per round: SET p99 and p99.9 (us), SETs slower than 1 ms and than 10 ms, window (s),"
		echo "and the pause (ms): BGSAVE's fork, livesnap's freeze. The medians compare the two."
		echo
		echo "| GiB | tool | p99 by round | median p99 | p99.9 by round | median p99.9 | SETs > 1 ms by round | SETs > 10 ms by round | window (s) by round | fork / freeze (ms) by round |"
		echo "|---|---|---|---|---|---|---|---|---|---|"
		for g in "${measured[@]}"; do
			lo=$W/load-$g.out
			local t k pauses
			for t in bgsave livesnap; do
				pauses=
				for ((k = 1; k <= ROUNDS; k++)); do
					if ((k == 1)); then
						pauses+="$(ms "$([[ $t == bgsave ]] && echo "${FORK[$g]}" || echo "${LS_FREEZE[$g]:-}")") "
					elif [[ $t == bgsave ]]; then
						pauses+="$(ms "$(cat "$W/fork-$g-$k" 2>/dev/null)") "
					else
						pauses+="$(ms "$(jq -r .freeze_us "$W/dump-$g-$k.json" 2>/dev/null)") "
					fi
				done
				echo "| $g | $(tool_name $t) | $(tail_cells "$lo" $t "") | $(rounds "$lo" $t "" over_1ms) | $(rounds "$lo" $t "" over_10ms) | $(rounds "$lo" $t "" secs) | ${pauses% } |"
			done
		done
	fi
	echo
	echo "#### The same $SPAN_SECS s of load after each snapshot's start"
	echo
	echo "The windows above end when each tool returns, so livesnap's cover 6-12 times less traffic than BGSAVE's. Here each"
	echo "snapshot's window is the $SPAN_SECS s from its start, for both tools (livesnap's own window and the quiet seconds after"
	echo "it; the first $SPAN_SECS s of a BGSAVE that runs longer): what one snapshot costs the same stretch of traffic. By round;"
	echo "the issue's figure is the p99 of each tool's own window, above."
	echo
	echo "| GiB | tool | SETs | p99 by round | median p99 | p99.9 by round | median p99.9 | SETs > 1 ms by round | median | SETs > 10 ms by round |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for g in "${measured[@]}"; do
		lo=$W/load-$g.out
		local t o1s
		for t in bgsave livesnap; do
			o1s=$(rounds "$lo" $t -span over_1ms)
			echo "| $g | $(tool_name $t) | $(median $(rounds "$lo" $t -span n)) | $(tail_cells "$lo" $t -span) | $o1s | $(median $o1s) | $(rounds "$lo" $t -span over_10ms) |"
		done
	done
	echo
	echo "### Total time and copy rates (MB = 10^6 bytes)"
	echo
	echo "BGSAVE: from the command to \`rdb_bgsave_in_progress:0\` (Redis reaps the child within 100 ms). livesnap: \`elapsed_ms\`"
	echo "(wall time of the command in brackets); its rate is pages saved x 4 KiB / elapsed. gcore: wall time."
	echo "process_vm_readv: every rw-p mapping of redis-server read in 1 MiB chunks (bench/redis/vmread.c), before the load."
	echo
	echo "| GiB | BGSAVE (s) | RDB (MiB) | livesnap (s) | image (MiB) | livesnap rate (MB/s) | write faults | throttle (ms) | gcore (s) | core (MiB) | disk dd (MB/s) | process_vm_readv (MB/s) |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	for g in "${measured[@]}"; do
		local rate=-
		[[ -n ${LS_PAGES[$g]:-} ]] && rate=$(awk -v p="${LS_PAGES[$g]}" -v s="${LS_S[$g]}" 'BEGIN { printf "%.0f", p * 4096 / s / 1e6 }')
		echo "| $g | ${BG_S[$g]} (${BG_ST[$g]}) | $(mib "${RDB[$g]}") | ${LS_S[$g]:--} (${LS_WALL[$g]:--}) | $(mib "${LS_IMG[$g]:-}") | $rate | ${LS_FAULTS[$g]:--} | $(ms "${LS_THROTTLE[$g]:-}") | ${GC_S[$g]:--} | $([[ -n ${GC_S[$g]:-} ]] && mib "${GC_SIZE[$g]}" || echo -) | $DD1, $DD2 | ${VMR[$g]} |"
	done
	echo
	echo "### Data unchanged by the checkpoint (load stopped)"
	echo
	echo "DEBUG DIGEST, then \`livesnap dump\`, then DEBUG DIGEST. During that dump, once the freeze was over (the dump held at"
	echo "the start of its copy phase with LIVESNAP_TEST_STOP_AT=copying, then continued), a"
	echo "marker key's 8 KiB value was overwritten in place (SETRANGE, same length; restored before the second digest): the"
	echo "image should hold the old value's token and not the new one's, counted in the ELF core exported from it. The image was then checked with \`livesnap verify\`."
	echo
	echo "| GiB | digest before | digest after | equal | freeze (ms) | marker | livesnap verify |"
	echo "|---|---|---|---|---|---|---|"
	for g in "${measured[@]}"; do
		echo "| $g | ${DG_BEFORE[$g]} | ${DG_AFTER[$g]} | $([[ ${DG_BEFORE[$g]} == "${DG_AFTER[$g]}" ]] && echo yes || echo NO) | $(ms "${DG_FREEZE[$g]:-}") | ${MARKER[$g]} | ${VERIFY[$g]} |"
	done
	echo
}
report >"$W/report.md"
{
	echo "# Redis: BGSAVE, livesnap and gcore of the same redis-server ($DATE_START UTC)"
	echo
	cat "$W/report.md"
	echo "Raw window lines (loadgen, then pingloop), per size:"
	echo
	echo '```'
	for g in "${measured[@]}"; do
		echo "# $g GiB"
		cat "$W/load-$g.out" "$W/ping-$g.out"
	done
	echo '```'
} >"$RESULTS"
log "wrote $RESULTS"

v() { [[ -n ${1:-} ]] && awk -v x="$1" 'BEGIN { printf "%.3f", x / 1000 }' || echo '?'; }
if [[ $HAVE_GNUPLOT -eq 1 && ${#measured[@]} -gt 0 ]]; then
	xtics=$(IFS=,; echo "${measured[*]}")
	for g in "${measured[@]}"; do
		po=$W/ping-$g.out
		echo "$g $(v "${FORK[$g]}") $(v "$(win "$po" bgsave max_gap_us)") $(v "${LS_FREEZE[$g]:-}") $(v "$(win "$po" livesnap max_gap_us)") $(v "$([[ -n ${GC_S[$g]:-} ]] && win "$po" gcore max_gap_us)") $(v "$(cat <(win "$po" base max_gap_us) <(win "$po" base2 max_gap_us) | sort -n | tail -1)")"
	done >"$W/pause.dat"
	gnuplot <<EOF || log "gnuplot failed"
set terminal pngcairo size 900,560 font "sans,10" noenhanced
set output "$HERE/pause.png"
set title "Redis $REDIS_VER under a SET load: pause against data size ($DATE_START UTC, $(nproc) vCPUs, load average ${LOAD_START%% *} at the start)"
set xlabel "used_memory (GiB)"
set ylabel "pause (ms, log scale)"
set logscale y
set datafile missing "?"
set key top left
set grid
set xtics ($xtics)
set xrange [0:$((${measured[-1]} + 1))]
plot "$W/pause.dat" using 1:2 with linespoints lw 2 pt 7 title "BGSAVE: fork (latest_fork_usec)", \
     "" using 1:3 with linespoints lw 2 pt 5 dt 2 title "BGSAVE: longest client gap", \
     "" using 1:4 with linespoints lw 2 pt 7 title "livesnap: freeze (freeze_us)", \
     "" using 1:5 with linespoints lw 2 pt 5 dt 2 title "livesnap: longest client gap", \
     "" using 1:6 with linespoints lw 2 pt 9 title "gdb gcore: longest client gap", \
     "" using 1:7 with linespoints lw 1 pt 1 lc rgb "gray50" title "no snapshot: longest client gap (larger of the two windows)"
EOF
	log "wrote $HERE/pause.png"
fi

if [[ $UPDATE_README -eq 1 ]]; then
	readme=$TOP/bench/README.md
	{
		echo "<!-- redis:begin -->"
		echo "## Redis: BGSAVE, livesnap and gcore of the same redis-server (issue 7)"
		echo
		echo "Generated by \`bench/redis/run.sh --update-readme\` (see bench/redis/README.md for the method); raw numbers in"
		echo "\`bench/redis/$(basename "$RESULTS")\`. Do not edit between the redis markers: the script rewrites it."
		[[ $QUICK -eq 1 ]] && echo && echo "**A quick development run (--quick): short windows, noisy machine; not the reference figures.**"
		echo
		cat "$W/report.md"
		echo "![pause against size](redis/pause.png)"
		echo "<!-- redis:end -->"
	} >"$W/section.md"
	if grep -q '^<!-- redis:begin -->$' "$readme" && grep -q '^<!-- redis:end -->$' "$readme"; then
		awk -v f="$W/section.md" '
			/^<!-- redis:begin -->$/ { while ((getline l < f) > 0) print l; skip = 1; next }
			/^<!-- redis:end -->$/ { skip = 0; next }
			!skip' "$readme" >"$W/readme.new"
	else
		{ cat "$readme"; echo; cat "$W/section.md"; } >"$W/readme.new"
	fi
	cat "$W/readme.new" >"$readme"
	log "updated the Redis section of $readme"
fi
cat "$RESULTS"
