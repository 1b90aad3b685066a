#!/usr/bin/env bash
# livesnap beside gdb's gcore on the same process in the same run: the target's pause (gcore stops it
# for the whole dump; livesnap for its freeze) and the total time to a core file, at 1 and 4 GiB of
# written 4 KiB pages. The pause is what a thread of the target sees: the longest gap between its
# 1 ms ticks while the dump runs. Run as root after `make`: bench/gcore.sh [SIZES_GIB...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
IMGDIR=${IMGDIR:-/var/tmp}
sizes=("${@:-1 4}")
read -r -a sizes <<<"${sizes[*]}"
command -v gcore >/dev/null || { echo "gcore.sh: needs gdb's gcore" >&2; exit 1; }

work=$(mktemp -d "$IMGDIR/livesnap-gcore.XXXXXX")
trap 'kill $tpid 2>/dev/null || true; rm -rf "$work"' EXIT
tpid=

cat >"$work/ticker.c" <<'C'
/* Fills N GiB of 4 KiB pages, then a thread ticks every 1 ms and records the longest gap between
 * ticks since the last reset (SIGUSR1 writes it to the file named by argv[2] and resets it). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
static volatile long max_gap_us, reset;
static const char *out;
static long now_us(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000L + t.tv_nsec / 1000; }
static void *tick(void *a) { long last = now_us(); for (;;) { usleep(1000); long n = now_us(); if (reset) { reset = 0; max_gap_us = 0; } else if (n - last > max_gap_us) max_gap_us = n - last; last = n; } return a; }
static void on_usr1(int s) { FILE *f = fopen(out, "w"); if (f) { fprintf(f, "%ld\n", max_gap_us); fclose(f); } reset = 1; }
int main(int argc, char **argv) {
        size_t size = (size_t)atol(argv[1]) << 30; out = argv[2];
        char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        madvise(p, size, MADV_NOHUGEPAGE);
        for (size_t i = 0; i < size; i += 4096) memset(p + i, (int)(i >> 12) | 1, 64);
        signal(SIGUSR1, on_usr1); pthread_t t; pthread_create(&t, NULL, tick, NULL);
        puts("ready"); fflush(stdout); for (;;) pause();
}
C
cc -O2 -pthread -o "$work/ticker" "$work/ticker.c"

gap() { kill -USR1 "$tpid"; sleep 0.2; cat "$work/gap"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }

echo "| GiB | tool | target's longest pause (ms) | freeze reported (ms) | time to core file (s) | core size (GiB) |"
echo "|---|---|---|---|---|---|"
for gib in "${sizes[@]}"; do
	"$work/ticker" "$gib" "$work/gap" >"$work/ticker.out" &
	tpid=$!
	while ! grep -q ready "$work/ticker.out" 2>/dev/null; do sleep 0.2; done
	sleep 0.5
	gap >/dev/null

	t0=$(date +%s.%N)
	gcore -o "$work/g" "$tpid" >/dev/null 2>&1
	t1=$(date +%s.%N)
	g_gap=$(gap)
	g_size=$(stat -c %s "$work/g.$tpid")
	rm -f "$work/g.$tpid"
	echo "| $gib | gdb gcore | $(ms "$g_gap") | - | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | $(awk -v s="$g_size" 'BEGIN { printf "%.2f", s / 2^30 }') |"

	t0=$(date +%s.%N)
	"$BUILD/livesnap" dump "$tpid" -o "$work/l.lsnap" --json --no-progress >"$work/dump.json"
	"$BUILD/livesnap" export "$work/l.lsnap" -o "$work/l.core" --no-progress
	t1=$(date +%s.%N)
	l_gap=$(gap)
	freeze=$(sed -n 's/.*"freeze_us":\([0-9]*\).*/\1/p' "$work/dump.json")
	l_size=$(stat -c %s "$work/l.core")
	rm -f "$work/l.lsnap" "$work/l.core"
	echo "| $gib | livesnap dump + export | $(ms "$l_gap") | $(ms "$freeze") | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | $(awk -v s="$l_size" 'BEGIN { printf "%.2f", s / 2^30 }') |"

	kill "$tpid"
	wait "$tpid" 2>/dev/null || true
	tpid=
done
