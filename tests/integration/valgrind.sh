#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# timeout: 300
# valgrind (memcheck) over livesnap's own code: the image readers (`info`, `verify`, `cat`, `export`
# of a dump of a busy victim-sweep) and the unit tests built without sanitizers. Any memcheck error,
# or a definite or indirect leak, fails the test (--error-exitcode).
#
# The engine itself (`livesnap dump`) is tried too, but valgrind 3.19 (Debian 12) does not implement
# pidfd_open and pidfd_getfd (syscalls 434 and 438), without which the engine cannot attach: that case
# is recognized and logged, and the dump is made without valgrind. The engine's leaks are checked by
# LeakSanitizer instead (asan-victims: the victim tests with the ASan/LSan build of the CLI).
# memcheck knows neither UFFDIO_* nor PAGEMAP_SCAN: it warns once per unknown ioctl request, which
# is not an error.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
command -v valgrind >/dev/null || skip "valgrind is not installed (scripts/install-deps.sh installs it)"
require_cmd jq

VG_ERR=99
vg() {
        local what=$1
        shift
        local rc=0
        valgrind --tool=memcheck --error-exitcode=$VG_ERR --leak-check=full --show-leak-kinds=definite,indirect \
                --errors-for-leak-kinds=definite,indirect --track-origins=yes --trace-children=no \
                --log-file="$TEST_TMP/vg-$what.log" "$@" || rc=$?
        if ((rc == VG_ERR)) || grep -q "ERROR SUMMARY: [1-9]" "$TEST_TMP/vg-$what.log"; then
                sed 's/^/    /' "$TEST_TMP/vg-$what.log" | tail -n 80 >&2
                die "$what: valgrind found errors or leaks (above)"
        fi
        ((rc == 0)) || die "$what: exited $rc under valgrind: $(tail -n 5 "$TEST_TMP/vg-$what.log")"
        log "$what: clean ($(grep -o 'ERROR SUMMARY: [0-9]* errors' "$TEST_TMP/vg-$what.log"); $(grep -o 'definitely lost: [0-9,]* bytes' "$TEST_TMP/vg-$what.log" || echo 'no leaks'))"
}

VICTIM_NICE=10 victim_start victim-sweep
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
IMAGE=$TEST_TMP/vg.lsnap

# The engine: under valgrind if this valgrind can run it.
rc=0
valgrind --tool=memcheck --error-exitcode=$VG_ERR --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --log-file="$TEST_TMP/vg-dump.log" \
        "$LIVESNAP" dump "$VPID" -o "$IMAGE" --json >"$TEST_TMP/dump.json" 2>"$TEST_TMP/dump.err" || rc=$?
if ((rc != 0)) && grep -qE "unhandled amd64-linux syscall: (434|438)" "$TEST_TMP/vg-dump.log"; then
        log "engine: NOT run under valgrind: $(valgrind --version) does not implement pidfd_open/pidfd_getfd ($(grep -oE 'unhandled amd64-linux syscall: [0-9]+' "$TEST_TMP/vg-dump.log" | sort -u | tr '\n' ' ')); LeakSanitizer covers the engine in asan-victims"
        dump "$VPID" "$IMAGE"
elif ((rc == VG_ERR)) || grep -q "ERROR SUMMARY: [1-9]" "$TEST_TMP/vg-dump.log"; then
        sed 's/^/    /' "$TEST_TMP/vg-dump.log" | tail -n 80 >&2
        die "dump: valgrind found errors or leaks in the engine (above)"
elif ((rc != 0)); then
        die "dump under valgrind exited $rc: $(cat "$TEST_TMP/dump.err")"
else
        log "dump: clean under valgrind"
fi
assert_victim_ok "$VPID" "$VDIR"

for img in "$IMAGE"; do
        out=$TEST_TMP/check-$(basename "$img")
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$img" "$out"
        victim_check victim-sweep "$out"
done

vg info "$LIVESNAP" info "$IMAGE" --json >/dev/null
vg verify "$LIVESNAP" verify "$IMAGE"
read -r _ addr len < <(head -n 1 "$VDIR/layout")
vg cat "$LIVESNAP" cat "$IMAGE" "$addr" "$len" >/dev/null
vg export-core "$LIVESNAP" export "$IMAGE" -o "$TEST_TMP/vg.core"
# Not test-procfs: it reads its own /proc entries (exe, [stack], the maps of its own mappings), which
# under valgrind describe valgrind's process rather than the test's, so its assertions fail by design.
# Not test-core: it writes cores of large images and takes minutes under valgrind; the export code
# runs above (export-core).
for t in test-image test-store test-config test-hazards; do
        [[ -x $BUILD/tests/$t ]] || die "$BUILD/tests/$t not built"
        vg "$t" "$BUILD/tests/$t" >"$TEST_TMP/$t.out" 2>&1
done
log "the readers and the unit tests run clean under valgrind"
