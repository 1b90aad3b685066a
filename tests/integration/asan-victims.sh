#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The victim tests once more with the CLI built under AddressSanitizer and UndefinedBehaviorSanitizer
# ($BUILD/asan/livesnap, its own objects, made by `make tests`): a representative set (sweep, churn,
# robust, pipe, target-exits, full-disk) runs with LIVESNAP pointing at that build, then a dump of
# victim-sweep is read back (info, verify, cat of every region) and exported as a core and as an image.
# (export.sh itself is not re-run: its 70000-mapping PN_XNUM case alone outlasts the runner's timeout
# under ASan.)
# Every sanitizer report is fatal: it aborts the CLI (SIGABRT, exit 134), which every one of these
# tests notices, since each checks the CLI's exit status (a test that expects a clean failure sees a
# crash instead). ASan's and LeakSanitizer's reports also go to a log file here, which fails this test
# even if the victim test somehow passed (GCC's UBSan runtime ignores log_path: its reports are on the
# sub-test's stderr, and the abort is what fails it).
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
top=$(cd "$(dirname "$0")/../.." && pwd)
ASAN_LIVESNAP=${ASAN_LIVESNAP:-$BUILD/asan/livesnap}
[[ -x $ASAN_LIVESNAP ]] || die "$ASAN_LIVESNAP not built (make tests builds it)"
grep -qa __asan_init "$ASAN_LIVESNAP" || die "$ASAN_LIVESNAP is not built with AddressSanitizer"

SAN_LOGS=$TEST_TMP/san
mkdir -p "$SAN_LOGS"
# exitcode=66: a leak report (LeakSanitizer exits rather than aborts) is not mistaken for the CLI's own
# "failed" status 1, which some of these tests expect.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:exitcode=66:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:log_path=$SAN_LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$SAN_LOGS/ubsan"
export LSAN_OPTIONS="exitcode=66"

# A quick self-check that reports land where we look for them and are fatal: the CLI's own --version
# must run clean, and the sanitizer must be live (an ASan build that cannot start fails here, not later).
rc=0
"$ASAN_LIVESNAP" --version >/dev/null 2>"$TEST_TMP/version.err" || rc=$?
((rc == 0)) || die "the ASan CLI fails to run --version (exit $rc): $(cat "$TEST_TMP/version.err")"

# churn is in the set because its slower timings under ASan found two engine races (a copy racing with
# an unmap and a new mapping at the same address; a range covering a hole that a new mapping filled).
TESTS=(${ASAN_VICTIM_TESTS:-sweep churn robust pipe target-exits full-disk})
failed=()
skipped=()
for t in "${TESTS[@]}"; do
        script=$top/tests/integration/$t.sh
        [[ -f $script ]] || die "no test $script"
        log "--- $t with LIVESNAP=$ASAN_LIVESNAP"
        rc=0
        LIVESNAP=$ASAN_LIVESNAP bash "$script" >"$TEST_TMP/$t.log" 2>&1 || rc=$?
        reports=$(find "$SAN_LOGS" -type f | sort)
        if [[ -n $reports ]]; then
                sed 's/^/    /' "$TEST_TMP/$t.log" | tail -n 20 >&2
                for f in $reports; do
                        echo "$TEST_NAME: sanitizer report $f:" >&2
                        head -n 60 "$f" | sed 's/^/    /' >&2
                done
                die "$t: the sanitizers reported errors in the CLI (above)"
        fi
        case $rc in
        0) log "$t: passed under ASan/UBSan" ;;
        77)
                log "$t: SKIPPED under ASan/UBSan: $(tail -n 1 "$TEST_TMP/$t.log")"
                skipped+=("$t")
                ;;
        *)
                tail -n 30 "$TEST_TMP/$t.log" | sed 's/^/    /' >&2
                if ((rc > 128)); then
                        soft_fail "$t: exited $rc (killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo "?")) under ASan/UBSan"
                else
                        soft_fail "$t: exited $rc under ASan/UBSan"
                fi
                failed+=("$t")
                ;;
        esac
done

# check_reports WHAT: fails the test if any sanitizer report was written.
check_reports() {
        local f reports
        reports=$(find "$SAN_LOGS" -type f | sort)
        [[ -z $reports ]] && return 0
        for f in $reports; do
                echo "$TEST_NAME: sanitizer report $f:" >&2
                head -n 60 "$f" | sed 's/^/    /' >&2
        done
        die "$1: the sanitizers reported errors in the CLI (above)"
}

# ---- export of a core, and the readers, on a dump by the ASan CLI ----
log "--- export: a dump of victim-sweep read back and exported as a core"
LIVESNAP=$ASAN_LIVESNAP
VICTIM_NICE=10 victim_start victim-sweep
dump "$VICTIM_PID" "$TEST_TMP/sweep.lsnap" --compress=3
verify_ok "$TEST_TMP/sweep.lsnap"
"$LIVESNAP" info "$TEST_TMP/sweep.lsnap" >/dev/null || die "info exited $?"
"$LIVESNAP" info "$TEST_TMP/sweep.lsnap" --json | jq -e '.threads | length == 7' >/dev/null || die "info --json: not 7 threads"
mkdir "$TEST_TMP/regions"
cp "$VICTIM_DIR/layout" "$TEST_TMP/regions/"
cat_layout "$TEST_TMP/sweep.lsnap" "$TEST_TMP/regions"
victim_check victim-sweep "$TEST_TMP/regions"
"$LIVESNAP" export "$TEST_TMP/sweep.lsnap" -o "$TEST_TMP/sweep.core" --no-progress || die "export --format core exited $?"
readelf -h "$TEST_TMP/sweep.core" | grep -q "CORE (Core file)" || die "the exported core is not an ELF core"
n=$(readelf -n "$TEST_TMP/sweep.core" | grep -c NT_PRSTATUS || true)
((n == 7)) || die "the core holds $n NT_PRSTATUS notes, expected 7"
"$LIVESNAP" export "$TEST_TMP/sweep.lsnap" --format image -o "$TEST_TMP/copy.lsnap" --no-progress ||
        die "export --format image exited $?"
cmp -s "$TEST_TMP/sweep.lsnap" "$TEST_TMP/copy.lsnap" || die "export --format image is not a copy"
assert_victim_ok "$VICTIM_PID" "$VICTIM_DIR"
check_reports export
log "export: a core with 7 threads and an image copy, no sanitizer report"

soft_failures_check
((${#skipped[@]} < ${#TESTS[@]})) || skip "every victim test skipped: ${skipped[*]}"
((${#skipped[@]} == 0)) || log "WARNING: skipped under ASan/UBSan: ${skipped[*]}"
log "${#TESTS[@]} victim tests under ASan/UBSan, $((${#TESTS[@]} - ${#skipped[@]})) ran, no sanitizer report"
