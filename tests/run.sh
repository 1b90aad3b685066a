#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs the unit test binaries ($BUILD/tests/test-*) and the integration tests (tests/integration/*.sh).
#
#   BUILD=/abs/build bash tests/run.sh [NAME...]
#
# NAME selects tests by name (e.g. "sweep" or "test-image"); default: all. Each test runs under
# `timeout` with its output in a log; a failing test's log tail is printed. Exit status 77 means
# skipped, and the test's last line of output says why. The last line printed is always
# "N passed, N failed, N skipped". Exit status 1 if any test failed.
#
# TEST_TIMEOUT (seconds, default 180) bounds each test; a script may ask for more with a line
# "# timeout: N" among its first ten. KEEP_LOGS=1 keeps the log directory.

set -uo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRCDIR/build}
BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || {
        echo "run.sh: build directory '${BUILD}' does not exist (run make first)" >&2
        echo "0 passed, 1 failed, 0 skipped"
        exit 1
}
export BUILD
export LIVESNAP=$BUILD/livesnap
export VICTIMS=$BUILD/tests/victims
TEST_TIMEOUT=${TEST_TIMEOUT:-180}

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/livesnap-check.XXXXXX")
passed=0
failed=0
skipped=0
failed_names=()

selected() {
        local name=$1 want
        ((${#SELECT[@]} == 0)) && return 0
        for want in "${SELECT[@]}"; do
                [[ $name == "$want" ]] && return 0
        done
        return 1
}
SELECT=("$@")

run_one() {
        local name=$1 log="$LOGDIR/$1.log" rc start secs reason limit=$TEST_TIMEOUT want
        shift
        if [[ $1 == bash && -f $2 ]]; then
                want=$(head -n 10 "$2" | sed -n 's/^# timeout: \([0-9][0-9]*\)$/\1/p' | head -n 1)
                [[ -z $want ]] || ((want <= limit)) || limit=$want
        fi
        start=$SECONDS
        # A test gets its own process group from timeout, so a timeout kills everything it started.
        timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 </dev/null
        rc=$?
        secs=$((SECONDS - start))
        case $rc in
        0)
                echo "PASS $name (${secs}s)"
                passed=$((passed + 1))
                ;;
        77)
                reason=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
                echo "SKIP $name: ${reason:-no reason given}"
                skipped=$((skipped + 1))
                ;;
        *)
                if ((rc == 124 || rc == 137)); then
                        echo "FAIL $name (timed out after ${limit}s, exit $rc)"
                else
                        echo "FAIL $name (exit $rc, ${secs}s)"
                fi
                tail -n 40 "$log" | sed 's/^/    /'
                failed=$((failed + 1))
                failed_names+=("$name")
                ;;
        esac
}

shopt -s nullglob

for t in "$BUILD"/tests/test-*; do
        [[ -f $t && -x $t ]] || continue
        name=$(basename "$t")
        selected "$name" || continue
        run_one "$name" "$t"
done

for t in "$SRCDIR"/tests/integration/*.sh; do
        name=$(basename "$t" .sh)
        selected "$name" || continue
        run_one "$name" bash "$t"
done

if ((failed > 0)) || [[ -n ${KEEP_LOGS:-} ]]; then
        ((failed > 0)) && echo "failed: ${failed_names[*]}"
        echo "logs in $LOGDIR"
else
        rm -rf "$LOGDIR"
fi
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
