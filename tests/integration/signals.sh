#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The signal sets an image records for each thread at the instant (read with ptrace in the freeze,
# not from /proc): victim-signals' threads have signals blocked and pending, for the thread alone and
# for the process, one queued twice; each NT_PRSTATUS of the exported core carries the thread's own
# pending set and its blocked set as /proc/PID/task/TID/status shows them (SigPnd, SigBlk), and the
# image names each thread as the kernel does.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd eu-readelf jq python3

victim_start victim-signals
VPID=$VICTIM_PID

# What the kernel says, a line per thread: TID SIGPND SIGBLK as eu-readelf writes sets (<1,10>).
for st in /proc/"$VPID"/task/*/status; do
        awk '/^Pid:/ {p=$2} /^SigPnd:/ {q=$2} /^SigBlk:/ {b=$2} END {print p, q, b}' "$st"
done | python3 -c '
import sys
def sset(h):
    v = int(h, 16)
    return "<" + ",".join(str(i + 1) for i in range(64) if v >> i & 1) + ">"
for line in sys.stdin:
    tid, pnd, blk = line.split()
    print(tid, sset(pnd), sset(blk))
' | sort >"$TEST_TMP/want"

img=$TEST_TMP/image
dump "$VPID" "$img"
"$LIVESNAP" export "$img" -o "$TEST_TMP/core" >/dev/null 2>"$TEST_TMP/export.err" ||
        die "livesnap export exited $?: $(cat "$TEST_TMP/export.err")"
# eu-readelf -n: per NT_PRSTATUS, "sigpend: <...>", "sighold: <...>", then "pid: N, ...".
eu-readelf -n "$TEST_TMP/core" | awk '
        /^ *sigpend:/ {p=$2}
        /^ *sighold:/ {h=$2}
        /^ *pid: / && p != "" {sub(",", "", $2); print $2, p, h; p=""}' | sort >"$TEST_TMP/got"
diff -u "$TEST_TMP/want" "$TEST_TMP/got" >&2 || die "the core's signal sets differ from the kernel's (above)"
grep -q '<10>' "$TEST_TMP/want" || die "the victim's main thread has no SIGUSR1 pending: the test sees nothing"
log "signal sets, thread by thread: $(tr '\n' ';' <"$TEST_TMP/got")"

"$LIVESNAP" info "$img" --json >"$TEST_TMP/info.json"
jq -e '[.threads[].comm] | sort == ["sig-worker", "victim-signals"]' "$TEST_TMP/info.json" >/dev/null ||
        die "thread names: $(jq -c '[.threads[].comm]' "$TEST_TMP/info.json"), expected sig-worker and victim-signals"
