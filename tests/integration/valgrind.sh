#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# timeout: 300
# valgrind (memcheck) over livesnap's own code outside the engine: the image readers (`info`, `verify`,
# `cat`, `export` as a core and as an image) over two dumps of a busy victim-sweep, one plain and one
# zstd-compressed, the client commands against livesnapd on a private bus (not the daemon itself: its
# workers run the engine, which valgrind 3.19 cannot run, see valgrind-engine.sh), and the unit tests
# built without sanitizers. Any memcheck error, or a definite or
# indirect leak, fails the test (--error-exitcode). The dumps are made without valgrind: the engine
# under valgrind is valgrind-engine.sh (which says why it skips where valgrind cannot run it).
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
command -v valgrind >/dev/null || skip "valgrind is not installed (scripts/install-deps.sh installs it)"
require_cmd jq dbus-daemon busctl pgrep readelf

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
        ((rc == ${VG_EXPECT:-0})) || die "$what: exited $rc under valgrind, expected ${VG_EXPECT:-0}: $(tail -n 5 "$TEST_TMP/vg-$what.log")"
        log "$what: clean ($(grep -o 'ERROR SUMMARY: [0-9]* errors' "$TEST_TMP/vg-$what.log"); $(grep -o 'definitely lost: [0-9,]* bytes' "$TEST_TMP/vg-$what.log" || echo 'no leaks'))"
}

# 2 MiB regions: images of a dozen MiB, dozens of chunks, read in seconds under valgrind.
VICTIM_NICE=10 victim_start victim-sweep --region-kib 2048
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR

for kind in plain zstd; do
        img=$TEST_TMP/$kind.lsnap
        if [[ $kind == zstd ]]; then
                dump "$VPID" "$img" --compress
        else
                dump "$VPID" "$img"
        fi
        assert_victim_ok "$VPID" "$VDIR"
        out=$TEST_TMP/check-$kind
        mkdir "$out"
        cp "$VDIR/layout" "$out/"
        cat_layout "$img" "$out"
        victim_check victim-sweep "$out"

        vg "info-$kind" "$LIVESNAP" info "$img" --json >/dev/null
        vg "verify-$kind" "$LIVESNAP" verify "$img"
        # Two regions: the control page, and a whole sweeper region spanning many chunks.
        for name in control anon; do
                vg "cat-$kind-$name" "$LIVESNAP" cat "$img" "$(layout_get "$VDIR" $name addr)" \
                        "$(layout_get "$VDIR" $name len)" >"$TEST_TMP/$kind-$name.bin"
                cmp -s "$TEST_TMP/$kind-$name.bin" "$out/$name.bin" || die "cat of '$name' under valgrind differs"
        done
        vg "export-core-$kind" "$LIVESNAP" export "$img" -o "$TEST_TMP/$kind.core"
        vg "export-image-$kind" "$LIVESNAP" export "$img" --format image -o "$TEST_TMP/$kind-copy.lsnap"
        verify_ok "$TEST_TMP/$kind-copy.lsnap"
        rm -f "$TEST_TMP/$kind.core" "$TEST_TMP/$kind-copy.lsnap"
done

# The CLI's client commands, against livesnapd on a private bus: a checkpoint followed to its end,
# list, show, jobs, export of a kept checkpoint (the daemon passes a file descriptor), delete, and a
# job that fails (the target is already traced), whose --json error path is its own code.
private_bus_start
echo "{ \"store_dir\": \"$TEST_TMP/store\" }" >"$TEST_TMP/livesnap.json"
livesnapd_start "$TEST_TMP/livesnap.json"
vg client-checkpoint "$LIVESNAP" checkpoint "$VPID" --label valgrind --wait --json >"$TEST_TMP/cp.json"
ID=$(jq -er .id "$TEST_TMP/cp.json")
vg client-list "$LIVESNAP" list --json >/dev/null
vg client-list-text "$LIVESNAP" list >/dev/null
vg client-show "$LIVESNAP" show "$ID" --json >/dev/null
vg client-jobs "$LIVESNAP" jobs --json >/dev/null
vg client-export "$LIVESNAP" export "$ID" -o "$TEST_TMP/kept.core"
readelf -h "$TEST_TMP/kept.core" | grep -q "CORE (Core file)" || die "the exported checkpoint is not an ELF core"
rm -f "$TEST_TMP/kept.core"
vg client-delete "$LIVESNAP" delete "$ID"
victim_start victim-tracer "$VPID"
VG_EXPECT=1 vg client-checkpoint-fails "$LIVESNAP" checkpoint "$VPID" --wait --json >"$TEST_TMP/fail.json"
jq -e '.result == "failed" and (.error | length > 0)' "$TEST_TMP/fail.json" >/dev/null ||
        die "a failed checkpoint's --json: $(cat "$TEST_TMP/fail.json")"
kill_wait "$VICTIM_PID"

# Not test-procfs: it reads its own /proc entries (exe, [stack], the maps of its own mappings), which
# under valgrind describe valgrind's process rather than the test's, so its assertions fail by design.
# Not test-core: it writes cores of large images and takes minutes under valgrind; the export code
# runs above (export-core).
for t in test-image test-store test-config test-hazards; do
        [[ -x $BUILD/tests/$t ]] || die "$BUILD/tests/$t not built"
        vg "$t" "$BUILD/tests/$t" >"$TEST_TMP/$t.out" 2>&1
done
log "the readers, the client and the unit tests run clean under valgrind"
