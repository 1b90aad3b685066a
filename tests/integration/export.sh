#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# livesnap export --format core: gdb and elfutils read the core; every thread is there, the main thread
# first, with backtraces through the victim's functions; the generation-sweep regions read from the
# core's PT_LOAD segments still show one cut per sweep; readelf accepts the file without warnings; bad
# input is refused and leaves no output.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd gdb readelf jq

victim_start victim-sweep
IMAGE=$TEST_TMP/sweep.lsnap
CORE=$TEST_TMP/sweep.core
dump "$VICTIM_PID" "$IMAGE"
"$LIVESNAP" export "$IMAGE" --format core -o "$CORE" || die "export failed"
[[ $(stat -c %a "$CORE") == 600 ]] || die "the core is not mode 0600"

# readelf: no warnings, one PT_NOTE first, NT_PRSTATUS per thread.
readelf -a -W "$CORE" >"$TEST_TMP/readelf" 2>"$TEST_TMP/readelf.err" || die "readelf failed"
[[ ! -s $TEST_TMP/readelf.err ]] || die "readelf warns: $(head -5 "$TEST_TMP/readelf.err")"
threads=$("$LIVESNAP" info "$IMAGE" --json | jq '.threads | length')
notes=$(readelf -n -W "$CORE" | grep -c "NT_PRSTATUS")
((notes == threads)) || die "$notes NT_PRSTATUS notes for $threads threads"
readelf -l -W "$CORE" | awk '$1 == "NOTE" || $1 == "LOAD" { print $1; exit }' | grep -qx NOTE || die "the first program header is not PT_NOTE"
if command -v eu-readelf >/dev/null; then
	eu-readelf -a "$CORE" >/dev/null 2>"$TEST_TMP/eu.err" || die "eu-readelf failed"
	[[ ! -s $TEST_TMP/eu.err ]] || die "eu-readelf warns: $(head -5 "$TEST_TMP/eu.err")"
fi
log "readelf accepts the core: $threads threads"

# gdb: every thread, the main one current, backtraces through the victim's functions.
gdb -batch -nx -ex "info threads" -ex "thread apply all bt" "$VICTIMS/victim-sweep" "$CORE" \
	>"$TEST_TMP/gdb" 2>&1 || die "gdb failed: $(tail -5 "$TEST_TMP/gdb")"
seen=$(grep -cE '^\*? +[0-9]+ +Thread ' "$TEST_TMP/gdb" || true)
((seen == threads)) || die "gdb shows $seen threads, the image has $threads"
grep -E '^\* +1 +Thread .*LWP '"$VICTIM_PID"'\)' "$TEST_TMP/gdb" >/dev/null ||
	die "the current thread in gdb is not the main thread: $(grep -E '^\*' "$TEST_TMP/gdb")"
for fn in sweep_once sweeper main; do
	grep -q " $fn " "$TEST_TMP/gdb" || grep -q " in $fn " "$TEST_TMP/gdb" ||
		die "no backtrace shows $fn: $(head -40 "$TEST_TMP/gdb")"
done
log "gdb shows all $threads threads with their backtraces"

if command -v eu-stack >/dev/null; then
	eu-stack --core="$CORE" -e "$VICTIMS/victim-sweep" >"$TEST_TMP/eu-stack" 2>&1 || true
	n=$(grep -c '^TID ' "$TEST_TMP/eu-stack" || true)
	((n == threads)) || die "eu-stack shows $n threads, expected $threads: $(head -20 "$TEST_TMP/eu-stack")"
	grep -q sweep_once "$TEST_TMP/eu-stack" || die "eu-stack shows no sweep_once"
	log "eu-stack shows all $threads threads"
fi

# The sweep regions from the core's segments: one cut per sweep.
out=$TEST_TMP/check
mkdir "$out"
cp "$VICTIM_DIR/layout" "$out/"
cmds=()
while read -r name addr len; do
	cmds+=(-ex "dump binary memory $out/$name.bin $addr $((addr + len))")
done <"$VICTIM_DIR/layout"
gdb -batch -nx "${cmds[@]}" "$VICTIMS/victim-sweep" "$CORE" >"$TEST_TMP/gdb-dump" 2>&1 ||
	die "gdb could not dump the regions: $(tail -5 "$TEST_TMP/gdb-dump")"
victim_check victim-sweep "$out"
log "the regions read from the core are point-in-time"

# Bad input.
expect_exit 2 "$LIVESNAP" export "$IMAGE" --format core
expect_exit 2 "$LIVESNAP" export "$IMAGE" --format bogus -o "$TEST_TMP/x.core"
head -c 100000 "$IMAGE" >"$TEST_TMP/cut.lsnap"
expect_exit 3 "$LIVESNAP" export "$TEST_TMP/cut.lsnap" -o "$TEST_TMP/cut.core"
[[ ! -e $TEST_TMP/cut.core ]] || die "a failed export left its output"
ls -A "$TEST_TMP" | grep -q '^\.' && die "a failed export left a temporary file"
log "bad input refused, nothing left behind"
