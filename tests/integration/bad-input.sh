#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Bad input gets a clear one-line error and the documented exit status (livesnap(1): 1 failed, 2 bad
# usage, 3 invalid image, 4 not in the image), never a crash (status 128 or more), and leaves nothing
# behind:
#  - images with a byte flipped in the header, the first section's header and payload, the index and
#    the trailer; truncated at several offsets; with length fields made huge (a section's stored_len,
#    the trailer's index size, entry count and file size, with the trailer's checksum made right so
#    the reader has to look at the fields themselves); read by info, verify, cat and export, and by the
#    ASan build of the CLI as well when it is built;
#  - absurd options: dump --buffer 0, --buffer 99999999T, --rate -1, --compress=99, bad PIDs, cat with
#    an ADDR/LEN that overflows, export of a directory, outputs in a missing directory;
#  - labels with bad UTF-8, control characters or '/' through `livesnap checkpoint --label`, and bad
#    option values sent straight over the bus, against livesnapd on a private bus.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_build
require_cmd python3 jq
top=$(cd "$(dirname "$0")/../.." && pwd)
ASAN_LIVESNAP=${ASAN_LIVESNAP:-$BUILD/asan/livesnap}
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"

CLIS=("$LIVESNAP")
if [[ -x $ASAN_LIVESNAP ]]; then
        CLIS+=("$ASAN_LIVESNAP")
else
        log "WARNING: $ASAN_LIVESNAP not built: the image checks run with the plain CLI only"
fi

# run_expect WANT... -- CMD...: runs CMD (stdout to $TEST_TMP/out, stderr to $TEST_TMP/err); records a
# failure unless its exit status is one of WANT, or if it crashed, or if it failed without exactly one
# line on stderr (starting "livesnap: " if CMD is livesnap). Sets RC. Failures are prefixed with $WHAT,
# when set (the spoiled image being read, say).
WHAT=
run_expect() {
        local -a want=()
        while [[ $1 != -- ]]; do
                want+=("$1")
                shift
        done
        shift
        RC=0
        timeout 60 "$@" >"$TEST_TMP/out" 2>"$TEST_TMP/err" </dev/null || RC=$?
        local w ok=0 lines pre=${WHAT:+$WHAT: }
        for w in "${want[@]}"; do
                ((RC == w)) && ok=1
        done
        if ((RC == 124)); then
                soft_fail "$pre'$*' hung (killed after 60 s)"
                return 0
        fi
        if ((RC >= 128)); then
                soft_fail "$pre'$*' crashed (exit $RC, SIG$(kill -l $((RC - 128)) 2>/dev/null || echo "?")): $(head -c 3000 "$TEST_TMP/err")"
                return 0
        fi
        if ((!ok)); then
                soft_fail "$pre'$*' exited $RC, expected ${want[*]}: $(head -c 1000 "$TEST_TMP/err")"
                return 0
        fi
        if ((RC != 0)); then
                lines=$(wc -l <"$TEST_TMP/err")
                if ((lines != 1)); then
                        soft_fail "$pre'$*' (exit $RC) printed $lines lines on stderr, not one: $(head -c 1000 "$TEST_TMP/err")"
                elif [[ ${1##*/} == livesnap ]] && ! grep -q '^livesnap: ' "$TEST_TMP/err"; then
                        soft_fail "$pre'$*' (exit $RC): the error does not start with 'livesnap: ': $(cat "$TEST_TMP/err")"
                fi
        fi
}

# no_leftovers DIR WHAT: DIR holds nothing (export and dump leave no file behind on failure).
no_leftovers() {
        local left
        left=$(ls -A "$1")
        [[ -z $left ]] || soft_fail "$2 left files behind in $1: $left"
        rm -rf "${1:?}"/* "$1"/.[!.]* 2>/dev/null || true
}

# ---- an image to spoil ----
IMG=$TEST_TMP/good.lsnap
CAT_LEN=4096
# A harmless target, for the image and for the refused dumps and checkpoints further down. A small
# image keeps the test quick: every spoiled copy is read whole by verify and export, twice.
sleep 600 &
SLEEPER=$!
cleanup_add "$SLEEPER"
sleeper_is_sleep() { [[ $(readlink /proc/"$SLEEPER"/exe) == */sleep ]]; }
wait_until 10 "the sleeper to exec sleep" sleeper_is_sleep
if [[ $(id -u) == 0 ]] && [[ -e /proc/sys/vm/unprivileged_userfaultfd || -e /dev/userfaultfd ]]; then
        # Compressed, so the page chunks spoiled below are zstd frames as well as plain ones.
        dump "$SLEEPER" "$IMG" --compress
        log "image: a dump of sleep, $(stat -c %s "$IMG") bytes"
else
        # Without root: the largest image in the fuzz corpus that verifies.
        for f in $(ls -S "$top"/tests/fuzz/corpus-image/*); do
                if "$LIVESNAP" verify "$f" >/dev/null 2>&1; then
                        cp "$f" "$IMG"
                        break
                fi
        done
        [[ -s $IMG ]] || die "no dump possible (not root) and no valid image in tests/fuzz/corpus-image"
        log "WARNING: not root, no dump: the image checks use $(stat -c %s "$IMG") bytes from the fuzz corpus"
fi
SIZE=$(stat -c %s "$IMG")
"$LIVESNAP" verify "$IMG" >/dev/null || die "the image to spoil does not verify"

# The image's layout, for aiming: the first section's header is at 64; the trailer says where the
# index is; the index where the first THREAD, META and MAPS sections are, and the address of the last
# page chunk (for cat: stored pages).
read -r IDX_OFF IDX_SIZE N_ENTRIES FIRST_TYPE FIRST_ARG THREAD_OFF META_OFF MAPS_OFF CAT_ADDR < <(python3 - "$IMG" <<'EOF'
import struct, sys
d = open(sys.argv[1], 'rb').read()
t = d[-48:]
assert t[:8] == b'LSNAPEND'
off, size, fsize, n = struct.unpack_from('<QQQQ', t, 8)
first_type, first_arg = struct.unpack_from('<I', d, 64 + 4)[0], struct.unpack_from('<Q', d, 64 + 16)[0]
at, last_pages = {}, 0
for i in range(n):
    typ, flags, o, arg = struct.unpack_from('<IIQQ', d, off + 48 + 40 * i)
    at.setdefault(typ, o)
    if typ == 5:
        last_pages = arg
print(off, size, n, first_type, first_arg, at.get(3, 0), at[1], at[2], hex(last_pages))
EOF
)
log "index at $IDX_OFF ($IDX_SIZE bytes, $N_ENTRIES entries), file $SIZE bytes; first section of type $FIRST_TYPE"
((THREAD_OFF > 0)) || log "WARNING: the image has no THREAD section: the checks of one are not run"
((CAT_ADDR > 0)) || die "the image has no page chunk"
"$LIVESNAP" cat "$IMG" "$CAT_ADDR" "$CAT_LEN" >/dev/null || die "cat of the last page chunk ($CAT_ADDR) fails on the good image"

# How the readers must take a spoiled first section. info reads the metadata (META, MAPS, HOLES,
# THREAD), not the pages: a spoiled page chunk is for verify, export, and a cat of its pages to find.
case $FIRST_TYPE in
5) FIRST_READ=("0 3" "$(printf '0x%x' "$FIRST_ARG")" 3) ;;
1 | 2 | 3 | 6) FIRST_READ=(3) ;;
*) FIRST_READ=("0 3") ;;
esac

# spoil OP ARGS: queues a spoiled copy of the image (see the Python below) and names it in $SPOILED;
# spoil_all writes every queued copy, in one Python run (one per copy made this test slow on a loaded
# machine). check_later ARGS: check_bad ARGS, queued to run after spoil_all.
mkdir -p "$TEST_TMP/spoiled"
SPOILS=()
CHECKS=()
spoil() {
        SPOILED=$TEST_TMP/spoiled/${#SPOILS[@]}.lsnap
        SPOILS+=("$SPOILED $*")
}
check_later() { CHECKS+=("$(printf '%q ' "$@")"); }
spoil_all() {
        printf '%s\n' "${SPOILS[@]}" >"$TEST_TMP/spoils"
        python3 - "$IMG" "$TEST_TMP/spoils" <<'EOF'
import struct, sys

def xxh32(data, seed=0):
    P1, P2, P3, P4, P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    M = 0xffffffff
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & M
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed & M, (seed - P1) & M]
        while i + 16 <= n:
            for k in range(4):
                lane = struct.unpack_from('<I', data, i + 4 * k)[0]
                v[k] = (rotl((v[k] + lane * P2) & M, 13) * P1) & M
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 4 <= n:
        h = (rotl((h + struct.unpack_from('<I', data, i)[0] * P3) & M, 17) * P4) & M
        i += 4
    while i < n:
        h = (rotl((h + data[i] * P5) & M, 11) * P1) & M
        i += 1
    h ^= h >> 15; h = (h * P2) & M
    h ^= h >> 13; h = (h * P3) & M
    h ^= h >> 16
    return h

src = sys.argv[1]
orig = open(src, 'rb').read()
assert xxh32(orig[-48:-4]) == struct.unpack_from('<I', orig, len(orig) - 4)[0], "xxh32 in this test is wrong"
for line in open(sys.argv[2]):
    out, op, *args = line.split()
    d = bytearray(orig)
    if op == 'flip':            # flip OFFSET (negative: from the end)
        o = int(args[0]); o = o if o >= 0 else len(d) + o
        d[o] ^= 0xff
    elif op == 'truncate':      # truncate LENGTH
        d = d[:int(args[0])]
    elif op == 'append':        # append BYTES
        d += args[0].encode()
    elif op == 'u64':           # u64 OFFSET VALUE: set a 64-bit field (the checksum over it left as it was)
        struct.pack_into('<Q', d, int(args[0]), int(args[1], 0))
    elif op == 'trailer':       # trailer FIELD_OFFSET VALUE: set a trailer field and make its checksum right
        t = len(d) - 48
        struct.pack_into('<Q', d, t + int(args[0]), int(args[1], 0))
        struct.pack_into('<I', d, t + 44, xxh32(bytes(d[t:t + 44])))
    elif op == 'header':        # header FIELD_OFFSET SIZE VALUE: set a header field and make its checksum right
        o, n, v = int(args[0]), int(args[1]), int(args[2], 0)
        d[o:o + n] = v.to_bytes(n, 'little')
        struct.pack_into('<I', d, 60, xxh32(bytes(d[:60])))
    else:
        sys.exit('spoil: unknown operation ' + op)
    open(out, 'wb').write(d)
EOF
}

mkdir -p "$TEST_TMP/exp"
# check_bad NAME FILE [VERIFY_STATUSES [INFO_STATUSES [CAT_ADDR CAT_STATUSES]]]: every reader refuses
# FILE cleanly. verify and export must exit with one of VERIFY_STATUSES (3 unless said; if it holds 0,
# export may also exit 4); info with one of INFO_STATUSES (the same unless said); cat of CAT_LEN bytes at
# CAT_ADDR (a mapping with pages unless said) with one of CAT_STATUSES (the info statuses or 4 unless
# said).
check_bad() {
        local name=$1 file=$2 vwant=${3:-3} cli others iwant addr cwant
        WHAT=$name
        others="$vwant"
        [[ $vwant == *0* ]] && others="0 3 4"
        iwant=${4:-$others}
        addr=${5:-$CAT_ADDR}
        cwant=${6:-"$iwant 4"}
        for cli in "${CLIS[@]}"; do
                run_expect $vwant -- "$cli" verify "$file"
                run_expect $iwant -- "$cli" info "$file"
                run_expect $iwant -- "$cli" info "$file" --json
                run_expect $cwant -- "$cli" cat "$file" "$addr" "$CAT_LEN"
                if ((RC != 0)) && [[ -s $TEST_TMP/out ]]; then
                        soft_fail "$name: cat failed (exit $RC) but wrote $(stat -c %s "$TEST_TMP/out") bytes"
                fi
                run_expect $others -- "$cli" export "$file" -o "$TEST_TMP/exp/out.core" --no-progress
                ((RC == 0)) && rm -f "$TEST_TMP/exp/out.core"
                no_leftovers "$TEST_TMP/exp" "$name: export"
        done
        WHAT=
}

# ---- flipped bytes: each part of the file ----
first_payload=$((64 + 48 + 1))
declare -A FLIPS=(
        [header-magic]=0 [header-version]=8 [header-pagesize]=25 [header-reserved]=40 [header-checksum]=61
        [section-magic]=64 [section-type]=68 [section-flags]=72 [section-arg]=80 [section-rawlen]=89
        [section-storedlen]=97 [section-checksum]=105 [section-payload]=$first_payload
        [index-header]=$((IDX_OFF + 4)) [index-checksum]=$((IDX_OFF + 41)) [index-entry-type]=$((IDX_OFF + 48))
        [index-entry-offset]=$((IDX_OFF + 48 + 8)) [index-entry-storedlen]=$((IDX_OFF + 48 + 32))
        [index-last-entry]=$((IDX_OFF + IDX_SIZE - 10))
        [trailer-magic]=-48 [trailer-index-offset]=-40 [trailer-index-size]=-32 [trailer-file-size]=-24
        [trailer-entries]=-16 [trailer-reserved]=-8 [trailer-checksum]=-2
)
for name in $(printf '%s\n' "${!FLIPS[@]}" | sort); do
        spoil flip "${FLIPS[$name]}"
        if [[ $name == section-* ]]; then
                check_later "flip $name" "$SPOILED" 3 "${FIRST_READ[@]}"
        else
                check_later "flip $name" "$SPOILED"
        fi
done
# The metadata sections info reads: a byte of each payload, and of the THREAD section's header. cat
# reads no THREAD section: it must still read the pages.
for what in "thread-payload $((THREAD_OFF + 48 + 4))" "thread-tid $((THREAD_OFF + 16))"; do
        ((THREAD_OFF > 0)) || break
        read -r name off <<<"$what"
        spoil flip "$off"
        check_later "flip $name" "$SPOILED" 3 3 "$CAT_ADDR" 0
done
for what in "meta-payload $((META_OFF + 48))" "maps-payload $((MAPS_OFF + 48 + 1))"; do
        read -r name off <<<"$what"
        spoil flip "$off"
        check_later "flip $name" "$SPOILED"
done

# ---- truncated ----
for len in 0 1 8 63 64 100 $((SIZE / 3)) $((SIZE / 2)) $((IDX_OFF)) $((IDX_OFF + 47)) $((SIZE - 48)) $((SIZE - 1)); do
        spoil truncate "$len"
        check_later "truncated to $len" "$SPOILED"
done
# One byte too many: the trailer is no longer at the end.
spoil append x
check_later "one byte appended" "$SPOILED"

# ---- huge length fields ----
for v in 0xffffffffffffffff 0x7fffffffffffffff 0x100000000 $((SIZE * 2)); do
        spoil u64 $((64 + 32)) "$v"
        check_later "section stored_len $v" "$SPOILED" 3 "${FIRST_READ[@]}"
        spoil u64 $((64 + 24)) "$v"
        check_later "section raw_len $v" "$SPOILED" 3 "${FIRST_READ[@]}"
        spoil u64 $((IDX_OFF + 48 + 32)) "$v"
        check_later "index entry stored_len $v" "$SPOILED"
        # The trailer's own checksum made right: the reader must check the fields.
        spoil trailer 16 "$v"
        check_later "trailer index size $v" "$SPOILED"
        spoil trailer 32 "$v"
        check_later "trailer entry count $v" "$SPOILED"
        spoil trailer 24 "$v"
        check_later "trailer file size $v" "$SPOILED"
        spoil trailer 8 "$v"
        check_later "trailer index offset $v" "$SPOILED"
done
spoil trailer 32 0
check_later "trailer entry count 0" "$SPOILED"
spoil trailer 8 0
check_later "trailer index offset 0" "$SPOILED"
# Header fields with the header's checksum made right.
spoil header 8 4 2
check_later "header version 2" "$SPOILED"
spoil header 12 4 0xffffffff
check_later "header size huge" "$SPOILED"
spoil header 24 8 0
check_later "header page size 0" "$SPOILED"
spoil header 24 8 65536
check_later "header page size 64K" "$SPOILED"
spoil header 16 8 1
check_later "header flags 1" "$SPOILED"
spoil_all
for c in "${CHECKS[@]}"; do
        eval "check_bad $c"
done
log "${#CHECKS[@]} spoiled images (bytes flipped in every part, truncated, huge or wrong length and header fields): each refused by every reader that reads the spoiled part"

# ---- not images ----
for cli in "${CLIS[@]}"; do
        for f in /dev/null "$TEST_TMP" "$top/README.md"; do
                run_expect 1 3 -- "$cli" info "$f"
                run_expect 1 3 -- "$cli" verify "$f"
                run_expect 1 3 -- "$cli" cat "$f" 0 1
                run_expect 1 3 -- "$cli" export "$f" -o "$TEST_TMP/exp/out.core" --no-progress
                no_leftovers "$TEST_TMP/exp" "export of $f"
        done
        run_expect 1 -- "$cli" info "$TEST_TMP/missing.lsnap"
        # A FIFO nobody writes: a reader must not hang on it.
        rm -f "$TEST_TMP/fifo"
        mkfifo "$TEST_TMP/fifo"
        run_expect 1 3 -- "$cli" info "$TEST_TMP/fifo"
        rm -f "$TEST_TMP/fifo"
done
log "a directory, /dev/null, a text file, a FIFO and a missing file: refused"

# ---- cat: ADDR and LEN ----
for cli in "${CLIS[@]}"; do
        run_expect 2 4 -- "$cli" cat "$IMG" 0xffffffffffffffff 2
        run_expect 2 4 -- "$cli" cat "$IMG" 0xfffffffffffff000 0x2000
        run_expect 2 4 -- "$cli" cat "$IMG" "$CAT_ADDR" 0xffffffffffffffff
        run_expect 2 4 -- "$cli" cat "$IMG" "$CAT_ADDR" 0x8000000000000000
        run_expect 2 -- "$cli" cat "$IMG" 18446744073709551616 1
        run_expect 2 -- "$cli" cat "$IMG" -1 1
        run_expect 2 -- "$cli" cat "$IMG" "$CAT_ADDR" -1
        run_expect 2 -- "$cli" cat "$IMG" 0x 1
        run_expect 2 -- "$cli" cat "$IMG" "$CAT_ADDR" 1x
        run_expect 2 -- "$cli" cat "$IMG" "$CAT_ADDR"
        run_expect 2 -- "$cli" cat "$IMG" "$CAT_ADDR" 1 2
        run_expect 0 -- "$cli" cat "$IMG" "$CAT_ADDR" 0
        [[ ! -s $TEST_TMP/out ]] || soft_fail "cat with LEN 0 wrote something"
        run_expect 4 -- "$cli" cat "$IMG" 0 4096
        [[ ! -s $TEST_TMP/out ]] || soft_fail "cat of an address not in the image wrote something"
done
log "cat: overflowing and malformed ADDR/LEN refused"

# ---- export: bad outputs ----
mkdir -p "$TEST_TMP/exp/adir"
for cli in "${CLIS[@]}"; do
        run_expect 1 -- "$cli" export "$IMG" -o "$TEST_TMP/missing-dir/out.core" --no-progress
        [[ ! -e $TEST_TMP/missing-dir ]] || soft_fail "export into a missing directory created it"
        run_expect 1 -- "$cli" export "$IMG" -o "$TEST_TMP/exp/adir" --no-progress
        [[ -d $TEST_TMP/exp/adir && -z $(ls -A "$TEST_TMP/exp/adir") ]] || soft_fail "export onto a directory changed it"
        [[ $(ls -A "$TEST_TMP/exp") == adir ]] || soft_fail "export onto a directory left files: $(ls -A "$TEST_TMP/exp")"
        run_expect 2 -- "$cli" export "$IMG" -o "$TEST_TMP/exp/x.core" --format elf
        run_expect 2 -- "$cli" export "$IMG"
        run_expect 2 -- "$cli" export "$IMG" -o ""
        [[ $(ls -A "$TEST_TMP/exp") == adir ]] || soft_fail "a refused export left files: $(ls -A "$TEST_TMP/exp")"
done
rmdir "$TEST_TMP/exp/adir"
log "export: a missing directory, a directory as output, a bad format: refused, nothing left"

# ---- dump: absurd options ----
# Refused options must not touch the sleeper (and a bad output path fails before it is).
mkdir -p "$TEST_TMP/dump"
cd "$TEST_TMP/dump"
for opt in "--buffer 0" "--buffer 99999999T" "--buffer 16E" "--buffer -1" "--buffer 1X" "--buffer ''" \
        "--rate -1" "--rate 0" "--rate 99999999999T" "--rate fast" "--compress=99" "--compress=0" "--compress=-1" \
        "--compress=3x" "--compress 99" "--bogus"; do
        eval "run_expect 2 -- \"\$LIVESNAP\" dump \"\$SLEEPER\" $opt -o \"$TEST_TMP/dump/x.lsnap\""
done
for pid in 0 -1 abc 99999999999 2147483648 "" "1 2"; do
        run_expect 2 -- "$LIVESNAP" dump "$pid" -o "$TEST_TMP/dump/x.lsnap"
done
run_expect 2 -- "$LIVESNAP" dump
run_expect 1 -- "$LIVESNAP" dump 2147483647 -o "$TEST_TMP/dump/x.lsnap"
run_expect 1 -- "$LIVESNAP" dump "$SLEEPER" -o "$TEST_TMP/missing-dir/x.lsnap"
grep -qi "missing-dir\|no such file" "$TEST_TMP/err" || soft_fail "dump into a missing directory: the error does not say so: $(cat "$TEST_TMP/err")"
run_expect 1 -- "$LIVESNAP" dump "$SLEEPER" -o "$TEST_TMP/dump"
run_expect 2 -- "$LIVESNAP" frobnicate
cd "$TEST_TMP"
no_leftovers "$TEST_TMP/dump" "refused dumps"
[[ $(proc_state "$SLEEPER") == S ]] || soft_fail "the target of the refused dumps is in state $(proc_state "$SLEEPER")"
assert_not_traced "$SLEEPER" "the target of the refused dumps"
log "dump: absurd options and PIDs refused with status 2, failures with 1; nothing left"

# ---- through livesnapd: labels and option values ----
LIVESNAPD=${LIVESNAPD:-$BUILD/livesnapd}
if [[ $(id -u) != 0 ]] || ! command -v dbus-daemon >/dev/null || ! command -v busctl >/dev/null || [[ ! -x $LIVESNAPD ]]; then
        log "WARNING: the livesnapd part NOT RUN: it needs root, dbus-daemon, busctl and $LIVESNAPD"
else
        private_bus_start
        STORE=$TEST_TMP/store
        printf '{ "store_dir": "%s" }\n' "$STORE" >"$TEST_TMP/livesnap.json"
        bg_start "$LIVESNAPD" --config "$TEST_TMP/livesnap.json"
        DAEMON_PID=$BG_PID
        wait_until 10 "livesnapd on the bus" busctl status org.livesnap1 >/dev/null 2>&1

        long=$(printf 'x%.0s' {1..129})
        for label in $'bad\xffutf8' $'\xc0\xaf' $'\xed\xa0\x80' $'tab\there' $'new\nline' $'del\x7f' $'esc\x1b[31m' \
                "a/b" "/" "../../etc/passwd" "$long"; do
                run_expect 2 -- "$LIVESNAP" checkpoint "$SLEEPER" --label "$label" --wait
                grep -q "invalid label" "$TEST_TMP/err" ||
                        soft_fail "label $(printf '%q' "$label"): not refused as an invalid label: $(cat "$TEST_TMP/err")"
        done
        # The same straight over the bus (busctl cannot send bad UTF-8: sd-bus refuses it before we do).
        # (An array, not a function: run_expect runs its command under timeout.)
        call=(busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager Checkpoint 'ua{sv}' "$SLEEPER")
        for args in "1 label s a/b" "1 label s $long" "1 label u 7" "1 buffer_size t 0" "1 buffer_size t 18446744073709551615" \
                "1 buffer_size u 4194304" "1 rate_limit s fast" "1 compress_level u 99" "1 compress_level i -1" \
                "1 compress_level t 3" "1 nosuchoption s x" "1 label v s x"; do
                # shellcheck disable=SC2086
                run_expect 1 -- "${call[@]}" $args
                grep -q "InvalidArgument\|must be\|invalid\|unknown option" "$TEST_TMP/err" ||
                        soft_fail "Checkpoint with $args: no clear refusal: $(cat "$TEST_TMP/err")"
        done
        run_expect 1 -- "${call[@]}" 1 label s $'tab\there'
        run_expect 1 -- busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager Checkpoint 's' x
        run_expect 1 -- busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager CheckpointUnit 'sa{sv}' "" 0
        run_expect 1 -- busctl call org.livesnap1 /org/livesnap1 org.livesnap1.Manager CheckpointUnit 'sa{sv}' \
                "x.service" 1 buffer_size t 1
        kill -0 "$DAEMON_PID" 2>/dev/null || die "livesnapd died of bad input"
        "$LIVESNAP" jobs --json | jq -e 'length == 0' >/dev/null || soft_fail "refused checkpoints left jobs"
        "$LIVESNAP" list --json | jq -e 'length == 0' >/dev/null || soft_fail "refused checkpoints left checkpoints"
        [[ -z $(ls -A "$STORE") ]] || soft_fail "refused checkpoints left files in the store: $(ls -A "$STORE")"
        [[ $(proc_state "$SLEEPER") == S ]] || soft_fail "the target of the refused checkpoints is in state $(proc_state "$SLEEPER")"
        log "livesnapd: bad labels and option values refused, daemon alive, store empty"
fi

soft_failures_check
log "every bad input refused cleanly"
