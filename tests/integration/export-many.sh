#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A core of a process with thousands of mappings and hundreds of threads loads in gdb with every
# thread, and readelf accepts it; the mappings' bytes read back from the core as they were.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd gdb readelf

THREADS=200
MAPS=3000
victim_start victim-many "$THREADS" "$MAPS"
IMAGE=$TEST_TMP/many.lsnap
CORE=$TEST_TMP/many.core
dump "$VICTIM_PID" "$IMAGE"
"$LIVESNAP" export "$IMAGE" -o "$CORE" || die "export failed"

readelf -l -W "$CORE" >"$TEST_TMP/phdrs" 2>"$TEST_TMP/readelf.err" || die "readelf failed"
[[ ! -s $TEST_TMP/readelf.err ]] || die "readelf warns: $(head -3 "$TEST_TMP/readelf.err")"
loads=$(grep -c '^  LOAD' "$TEST_TMP/phdrs")
((loads >= MAPS)) || die "only $loads PT_LOAD segments for $MAPS mappings"

gdb -batch -nx -ex "info threads" "$VICTIMS/victim-many" "$CORE" >"$TEST_TMP/gdb" 2>&1 ||
	die "gdb failed: $(tail -5 "$TEST_TMP/gdb")"
seen=$(grep -cE '^\*? +[0-9]+ +Thread ' "$TEST_TMP/gdb" || true)
((seen == THREADS + 1)) || die "gdb shows $seen threads, expected $((THREADS + 1))"

# Every page of the mappings holds its index's byte pattern.
addr=$(layout_get "$VICTIM_DIR" maps addr)
gdb -batch -nx -ex "dump binary memory $TEST_TMP/maps.bin $addr $((addr + MAPS * 4096))" \
	"$VICTIMS/victim-many" "$CORE" >/dev/null 2>&1 || die "gdb could not read the mappings from the core"
python3 - "$TEST_TMP/maps.bin" "$MAPS" <<'PY' || die "the mappings read from the core are wrong"
import sys
data = open(sys.argv[1], 'rb').read()
n = int(sys.argv[2])
assert len(data) == n * 4096, len(data)
for m in range(n):
    page = data[m * 4096:(m + 1) * 4096]
    assert page == bytes([m % 250 + 1]) * 4096, m
PY
log "$loads segments and $seen threads in the core; gdb reads them all"
