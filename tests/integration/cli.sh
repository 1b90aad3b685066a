#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The CLI's contract on bad input: bad usage exits 2, a missing file 1, a file that is not a valid
# image (garbage, empty, truncated, corrupted) 3, `cat` of bytes the image does not hold 4 with
# nothing on stdout; --help exits 0.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_build

test_usage() {
        local target
        log "--- bad usage"
        bg_start sleep 600
        target=$BG_PID
        expect_exit 2 "$LIVESNAP"
        expect_exit 2 "$LIVESNAP" no-such-verb
        expect_exit 2 "$LIVESNAP" dump
        expect_exit 2 "$LIVESNAP" dump --no-such-option "$target"
        expect_exit 2 "$LIVESNAP" dump abc
        expect_exit 2 "$LIVESNAP" dump 12abc
        expect_exit 2 "$LIVESNAP" dump "$target" "$target"
        expect_exit 2 "$LIVESNAP" dump "$target" -o "$TEST_TMP/x.img" --buffer xyz
        expect_exit 2 "$LIVESNAP" dump "$target" -o "$TEST_TMP/x.img" --buffer -5
        expect_exit 2 "$LIVESNAP" dump "$target" -o "$TEST_TMP/x.img" --buffer 12Q
        expect_exit 2 "$LIVESNAP" dump "$target" -o "$TEST_TMP/x.img" --rate fast
        expect_exit 2 "$LIVESNAP" dump "$target" -o "$TEST_TMP/x.img" --compress=99
        [[ ! -e $TEST_TMP/x.img ]] || die "a dump with bad usage wrote an image"
        assert_not_traced "$target" "sleep target"
        expect_exit 2 "$LIVESNAP" info
        expect_exit 2 "$LIVESNAP" info --no-such-option "$TEST_TMP/x.img"
        expect_exit 2 "$LIVESNAP" verify
        expect_exit 2 "$LIVESNAP" cat
        # (cat's argument checks on a real image are in test_real_image)
}

test_help() {
        local verb
        log "--- --help"
        expect_exit 0 "$LIVESNAP" --help
        [[ -s $TEST_TMP/out ]] || die "livesnap --help printed nothing on stdout"
        for verb in dump info verify cat; do
                expect_exit 0 "$LIVESNAP" "$verb" --help
                grep -q "$verb" "$TEST_TMP/out" || die "livesnap $verb --help does not mention '$verb'"
        done
}

test_missing_file() {
        local verb
        log "--- nonexistent file"
        expect_exit 1 "$LIVESNAP" info "$TEST_TMP/does-not-exist"
        expect_exit 1 "$LIVESNAP" verify "$TEST_TMP/does-not-exist"
        expect_exit 1 "$LIVESNAP" cat "$TEST_TMP/does-not-exist" 0x1000 8
        [[ ! -s $TEST_TMP/out ]] || die "cat of a missing file printed data"
}

# flip_byte FILE OFFSET: inverts the bits of one byte in place.
flip_byte() {
        local b
        b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
        printf '%b' "\\x$(printf %02x $((b ^ 0xff)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# expect_bad_image FILE WHAT: info, verify and cat all exit 3 and cat prints nothing.
expect_bad_image() {
        local file=$1 what=$2
        expect_exit 3 "$LIVESNAP" info "$file"
        [[ -s $TEST_TMP/err ]] || die "info of $what exited 3 without a message"
        expect_exit 3 "$LIVESNAP" info --json "$file"
        expect_exit 3 "$LIVESNAP" verify "$file"
        expect_exit 3 "$LIVESNAP" cat "$file" 0x1000 8
        [[ ! -s $TEST_TMP/out ]] || die "cat of $what printed data"
}

test_garbage() {
        local i
        log "--- not an image"
        : >"$TEST_TMP/empty"
        expect_bad_image "$TEST_TMP/empty" "an empty file"
        head -c 65536 /dev/urandom >"$TEST_TMP/random"
        expect_bad_image "$TEST_TMP/random" "random bytes"
        for ((i = 0; i < 2000; i++)); do echo "this is not a livesnap image"; done >"$TEST_TMP/text"
        expect_bad_image "$TEST_TMP/text" "a text file"
}

test_real_image() {
        local image=$TEST_TMP/real.img size addr stack
        log "--- a real image, then damaged copies"
        [[ $(id -u) -eq 0 ]] || skip "needs root to make a real image (the usage and bad-file checks before it passed)"
        require_uffd_wp
        bg_start sleep 600
        sleep 0.05
        dump "$BG_PID" "$image"
        assert_alive "$BG_PID" "the dumped sleep"
        assert_not_traced "$BG_PID" "the dumped sleep"
        expect_exit 0 "$LIVESNAP" verify "$image"
        expect_exit 0 "$LIVESNAP" info "$image"
        [[ -s $TEST_TMP/out ]] || die "livesnap info printed nothing"
        if command -v jq >/dev/null; then
                "$LIVESNAP" info --json "$image" >"$TEST_TMP/info.json" || die "info --json failed"
                jq -e . "$TEST_TMP/info.json" >/dev/null || die "info --json is not JSON: $(head -c 500 "$TEST_TMP/info.json")"
                for k in version file_size meta threads mappings holes pages_stored chunks; do
                        jq -e --arg k "$k" 'has($k)' "$TEST_TMP/info.json" >/dev/null ||
                                die "info --json has no '$k' key"
                done
        fi

        # cat's usage errors, on a valid image.
        expect_exit 2 "$LIVESNAP" cat "$image"
        expect_exit 2 "$LIVESNAP" cat "$image" 0x1000
        expect_exit 2 "$LIVESNAP" cat "$image" zz 8
        expect_exit 2 "$LIVESNAP" cat "$image" 0x1000 -1
        expect_exit 2 "$LIVESNAP" cat "$image" 0x1000 8 extra

        # cat: the stack holds data; an address below mmap_min_addr is never mapped.
        addr=$(awk '/\[stack\]/ {split($1, a, "-"); print "0x" a[1]; exit}' /proc/"$BG_PID"/maps)
        stack=$(awk '/\[stack\]/ {split($1, a, "-"); print "0x" a[2]; exit}' /proc/"$BG_PID"/maps)
        expect_exit 0 "$LIVESNAP" cat "$image" $((stack - 4096)) 4096
        (($(stat -c %s "$TEST_TMP/out") == 4096)) || die "cat of a stack page printed $(stat -c %s "$TEST_TMP/out") bytes, expected 4096"
        expect_exit 0 "$LIVESNAP" cat "$image" $((stack - 8192)) 8192
        expect_exit 0 "$LIVESNAP" cat "$image" "$((stack - 100))" 100
        (($(stat -c %s "$TEST_TMP/out") == 100)) || die "cat of 100 bytes printed $(stat -c %s "$TEST_TMP/out")"
        expect_exit 4 "$LIVESNAP" cat "$image" 0x1000 8
        [[ ! -s $TEST_TMP/out ]] || die "cat of an unmapped address printed data"
        expect_exit 4 "$LIVESNAP" cat "$image" 4096 8
        # A range that starts mapped and runs past the end of the stack: 4, and nothing printed.
        expect_exit 4 "$LIVESNAP" cat "$image" $((stack - 8)) 16
        [[ ! -s $TEST_TMP/out ]] || die "cat of a partly unmapped range printed data"
        # A read-only file mapping (the sleep binary's text) is not saved: 4.
        addr=$(awk '$2 ~ /^r-x/ && $6 ~ /\// {split($1, a, "-"); print "0x" a[1]; exit}' /proc/"$BG_PID"/maps)
        expect_exit 4 "$LIVESNAP" cat "$image" "$addr" 8
        [[ ! -s $TEST_TMP/out ]] || die "cat of a file-backed read-only page printed data"

        # Damaged copies.
        size=$(stat -c %s "$image")
        head -c $((size / 2)) "$image" >"$TEST_TMP/half.img"
        expect_bad_image "$TEST_TMP/half.img" "an image cut in half"
        head -c $((size - 1)) "$image" >"$TEST_TMP/minus1.img"
        expect_bad_image "$TEST_TMP/minus1.img" "an image missing its last byte"
        head -c 4096 "$image" >"$TEST_TMP/head.img"
        expect_bad_image "$TEST_TMP/head.img" "the first 4 KiB of an image"
        # A flipped byte in the middle (page data or metadata): verify must notice.
        local off
        for off in $((size / 2)) $((size / 3)) 100; do
                cp "$image" "$TEST_TMP/flip.img"
                flip_byte "$TEST_TMP/flip.img" "$off"
                cmp -s "$image" "$TEST_TMP/flip.img" && die "failed to corrupt the copy"
                expect_exit 3 "$LIVESNAP" verify "$TEST_TMP/flip.img"
        done
        rm -f "$TEST_TMP"/*.img
}

test_usage
test_help
test_missing_file
test_garbage
test_real_image
log "CLI contract holds"
