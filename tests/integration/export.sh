#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# livesnap export --format core: gdb and elfutils read the core; every thread is there, the main thread
# first, with backtraces through the victim's functions and the right values of their locals; the
# generation-sweep regions read from the core's PT_LOAD segments still show one cut per sweep; readelf
# accepts the file without warnings; a process with thousands of mappings and hundreds of threads, and
# one with more than 65535 mappings (PN_XNUM), load in gdb; `info` predicts the segments; bad input is
# refused and leaves no output.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
require_cmd gdb readelf jq python3 eu-readelf eu-stack

GDB=(gdb -batch -nx -iex "set debuginfod enabled off")

# An independent reader of the core: `core.py check CORE` checks the ELF structure and prints
# key=value lines (loads, bytes, xnum, prstatus: the TIDs of the NT_PRSTATUS notes in order, ...);
# `core.py extract CORE LAYOUT DIR` writes DIR/NAME.bin for every layout line from the PT_LOAD
# segments' file bytes, and fails if a byte is not in the core.
cat >"$TEST_TMP/core.py" <<'EOF'
import struct, sys, os

PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO, NT_AUXV, NT_SIGINFO, NT_FILE, NT_X86_XSTATE = 1, 2, 3, 6, 0x53494749, 0x46494c45, 0x202

def fail(msg):
    sys.exit("core.py: " + msg)

def read_headers(f):
    eh = f.read(64)
    if eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
        fail("not a 64-bit little-endian ELF file")
    (e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum,
     _) = struct.unpack("<HHIQQQIHHHHHH", eh[16:64])
    if e_type != 4 or e_machine != 62 or e_phentsize != 56:
        fail("not an x86_64 ELF core (type %d, machine %d)" % (e_type, e_machine))
    xnum = e_phnum == 0xFFFF
    n = e_phnum
    if xnum:
        if e_shnum != 1 or e_shentsize != 64 or e_shoff == 0:
            fail("PN_XNUM without section header 0 (e_shnum %d)" % e_shnum)
        f.seek(e_shoff)
        sh = struct.unpack("<IIQQQQIIQQ", f.read(64))
        if sh[1] != 0:
            fail("section header 0 is not SHT_NULL")
        n = sh[7]
        if n < 0xFFFF:
            fail("PN_XNUM with only %d program headers" % n)
    f.seek(e_phoff)
    raw = f.read(56 * n)
    if len(raw) != 56 * n:
        fail("program headers truncated")
    return xnum, [struct.unpack_from("<IIQQQQQQ", raw, 56 * i) for i in range(n)]

def notes(f, off, size):
    f.seek(off)
    data = f.read(size)
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos:pos + namesz].rstrip(b"\0").decode()
        pos += (namesz + 3) & ~3
        yield name, ntype, data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
    if pos != len(data):
        fail("notes do not end where PT_NOTE does")

def check(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        xnum, ph = read_headers(f)
        if ph[0][0] != PT_NOTE:
            fail("the first program header is not PT_NOTE")
        loads = ph[1:]
        prev_end, total = 0, 0
        for (t, flags, off, vaddr, _, filesz, memsz, align) in loads:
            if t != PT_LOAD:
                fail("program header of type %d after PT_NOTE" % t)
            if vaddr < prev_end:
                fail("PT_LOAD at 0x%x overlaps or is out of order" % vaddr)
            if filesz not in (0, memsz):
                fail("PT_LOAD at 0x%x: p_filesz %d, p_memsz %d" % (vaddr, filesz, memsz))
            if filesz and (off + filesz > size or off % 4096 != vaddr % 4096):
                fail("PT_LOAD at 0x%x: bad p_offset 0x%x (file is %d bytes)" % (vaddr, off, size))
            prev_end = vaddr + memsz
            total += filesz
        types, tids = [], []
        for name, ntype, desc in notes(f, ph[0][2], ph[0][5]):
            types.append(ntype)
            if ntype == NT_PRSTATUS:
                if name != "CORE" or len(desc) != 336:
                    fail("NT_PRSTATUS: name %s, %d bytes" % (name, len(desc)))
                tids.append(struct.unpack_from("<i", desc, 32)[0])
            if ntype == NT_X86_XSTATE and name != "LINUX":
                fail("NT_X86_XSTATE named %s" % name)
            if ntype == NT_FILE:
                count, page = struct.unpack_from("<QQ", desc)
                names = desc[16 + 24 * count:].split(b"\0")
                if page != 4096 or len(names) != count + 1 or names[-1] != b"":
                    fail("NT_FILE: %d entries, %d names, page size %d" % (count, len(names) - 1, page))
                if any(not n.startswith(b"/") for n in names[:-1]):
                    fail("NT_FILE holds a name that is not a path")
        if not types or types[0] != NT_PRPSINFO:
            fail("the first note is not NT_PRPSINFO")
        if types[1:2] != [NT_PRSTATUS]:
            fail("NT_PRSTATUS does not follow NT_PRPSINFO")
        if types[-2:] != [NT_AUXV, NT_FILE]:
            fail("the notes do not end with NT_AUXV, NT_FILE")
    print("loads=%d" % len(loads))
    print("bytes=%d" % total)
    print("xnum=%d" % xnum)
    print("prstatus=%s" % ",".join(map(str, tids)))
    print("fpregset=%d" % types.count(NT_FPREGSET))
    print("xstate=%d" % types.count(NT_X86_XSTATE))
    print("siginfo=%d" % types.count(NT_SIGINFO))

def extract(path, layout, outdir):
    with open(path, "rb") as f:
        _, ph = read_headers(f)
        loads = sorted((p for p in ph if p[0] == PT_LOAD), key=lambda p: p[3])
        for line in open(layout):
            name, addr, length = line.split()
            addr, length = int(addr, 0), int(length)
            out, pos, end = bytearray(), addr, addr + length
            for (_, _, off, vaddr, _, filesz, memsz, _) in loads:
                if vaddr + memsz <= pos or vaddr >= end:
                    continue
                if vaddr > pos:
                    fail("%s: 0x%x is not in any PT_LOAD" % (name, pos))
                if filesz == 0:
                    fail("%s: 0x%x is in a PT_LOAD without file bytes" % (name, pos))
                n = min(end, vaddr + memsz) - pos
                f.seek(off + pos - vaddr)
                data = f.read(n)
                out += data + bytes(n - len(data))  # a trailing hole of the file reads short
                pos += n
                if pos == end:
                    break
            if pos != end:
                fail("%s: 0x%x is not in any PT_LOAD" % (name, pos))
            with open(os.path.join(outdir, name + ".bin"), "wb") as o:
                o.write(out)

if sys.argv[1] == "check":
    check(sys.argv[2])
else:
    extract(sys.argv[2], sys.argv[3], sys.argv[4])
EOF

# core_check CORE: core.py's structural checks; sets CORE_INFO[key]=value.
declare -A CORE_INFO
core_check() {
	local k v
	python3 "$TEST_TMP/core.py" check "$1" >"$1.check" 2>&1 || die "core.py check $1: $(cat "$1.check")"
	CORE_INFO=()
	while IFS== read -r k v; do CORE_INFO[$k]=$v; done <"$1.check"
}

# readelf_clean CORE [ALLOWED]: readelf -a and eu-readelf -a exit 0 and warn about nothing (but the
# warnings matching the regex ALLOWED).
readelf_clean() {
	local core=$1 allowed=${2:-} rc=0
	readelf -a -W "$core" >"$core.readelf" 2>"$core.readelf.err" || rc=$?
	((rc == 0)) || die "readelf -a exited $rc: $(head -5 "$core.readelf.err")"
	if [[ -n $allowed ]]; then
		grep -vE "$allowed" "$core.readelf.err" >"$core.readelf.err2" || true
		mv "$core.readelf.err2" "$core.readelf.err"
	fi
	[[ ! -s $core.readelf.err ]] || die "readelf warns: $(head -5 "$core.readelf.err")"
	eu-readelf -a "$core" >"$core.eu-readelf" 2>"$core.eu-readelf.err" || rc=$?
	((rc == 0)) || die "eu-readelf -a exited $rc: $(head -5 "$core.eu-readelf.err")"
	[[ ! -s $core.eu-readelf.err ]] || die "eu-readelf warns: $(head -5 "$core.eu-readelf.err")"
}

# info_matches IMAGE: `info` predicts what core.py found in the core (after core_check).
info_matches() {
	local image=$1 segs bytes
	"$LIVESNAP" info "$image" --json >"$image.info" || die "livesnap info --json exited $?"
	segs=$(jq -er '.export_core.segments' "$image.info") || die "info --json has no export_core: $(jq -c 'del(.mappings)' "$image.info")"
	bytes=$(jq -er '.export_core.bytes' "$image.info")
	((segs == CORE_INFO[loads])) || die "info says $segs segments, the core has ${CORE_INFO[loads]} PT_LOADs"
	((bytes == CORE_INFO[bytes])) || die "info says $bytes bytes, the core's PT_LOADs hold ${CORE_INFO[bytes]}"
	"$LIVESNAP" info "$image" | grep -qE "^Export: +core with $segs PT_LOAD segments \(.* of memory\), [0-9]+ threads$" ||
		die "info shows no export line: $("$LIVESNAP" info "$image" | tail -3)"
}

# all_in_read PID: every thread is in the read system call.
all_in_read() {
	local t
	for t in /proc/"$1"/task/*; do
		[[ $(cut -d' ' -f1 "$t/syscall" 2>/dev/null) == 0 ]] || return 1
	done
}

# ---- the generation sweep ----

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
# (awk reads to the end: with pipefail, a readelf killed by SIGPIPE would fail the pipeline)
readelf -l -W "$CORE" | awk '($1 == "NOTE" || $1 == "LOAD") && !first { first = $1 } END { print first }' |
	grep -qx NOTE || die "the first program header is not PT_NOTE"
if command -v eu-readelf >/dev/null; then
	eu-readelf -a "$CORE" >/dev/null 2>"$TEST_TMP/eu.err" || die "eu-readelf failed"
	[[ ! -s $TEST_TMP/eu.err ]] || die "eu-readelf warns: $(head -5 "$TEST_TMP/eu.err")"
fi
core_check "$CORE"
[[ ${CORE_INFO[prstatus]%%,*} == "$VICTIM_PID" ]] || die "the first NT_PRSTATUS is TID ${CORE_INFO[prstatus]%%,*}, not the main thread $VICTIM_PID"
info_matches "$IMAGE"
log "readelf accepts the core: $threads threads, ${CORE_INFO[loads]} PT_LOADs holding ${CORE_INFO[bytes]} bytes"

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

# The sweep regions from the core's segments: one cut per sweep. Once read by gdb, once straight from
# the program headers.
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
rm -f "$out"/*.bin
python3 "$TEST_TMP/core.py" extract "$CORE" "$out/layout" "$out" || die "the sweep regions are not all in the core"
victim_check victim-sweep "$out"
log "the regions read from the core are point-in-time"
kill_wait "$VICTIM_PID"
rm -f "$CORE"

# ---- threads in known functions, with known locals ----

victim_start victim-gdb
GPID=$VICTIM_PID
GDIR=$VICTIM_DIR
wait_until 10 "every thread of victim-gdb to block in read()" all_in_read "$GPID"
IMAGE=$TEST_TMP/gdb.lsnap
CORE=$TEST_TMP/gdb.core
BIN=$VICTIMS/victim-gdb
dump "$GPID" "$IMAGE"
"$LIVESNAP" export "$IMAGE" --format core -o "$CORE" --no-progress || die "export failed"
readelf_clean "$CORE"
core_check "$CORE"
info_matches "$IMAGE"
mapfile -t FUNCS < <(cut -d' ' -f1 "$GDIR/tids")
mapfile -t TIDS < <(cut -d' ' -f2 "$GDIR/tids")
((${#TIDS[@]} == 5)) || die "victim-gdb lists ${#TIDS[@]} threads: $(cat "$GDIR/tids")"
[[ ${TIDS[0]} == "$GPID" && ${CORE_INFO[prstatus]%%,*} == "$GPID" ]] ||
	die "the NT_PRSTATUS notes are for ${CORE_INFO[prstatus]}: the main thread $GPID is not first"
for t in "${TIDS[@]}"; do
	[[ ,${CORE_INFO[prstatus]}, == *",$t,"* ]] || die "no NT_PRSTATUS for TID $t (${CORE_INFO[prstatus]})"
done
for k in fpregset xstate siginfo; do
	((CORE_INFO[$k] == 5)) || die "${CORE_INFO[$k]} notes of kind $k for 5 threads"
done
n=$(eu-readelf --notes "$CORE" | grep -cw PRSTATUS || true)
((n == 5)) || die "eu-readelf --notes lists $n PRSTATUS notes for 5 threads"

"${GDB[@]}" -ex "info threads" -ex "thread apply all bt" "$BIN" "$CORE" >"$TEST_TMP/gdb" 2>&1 ||
	die "gdb failed: $(tail -5 "$TEST_TMP/gdb")"
seen=$(grep -cE '^\*? +[0-9]+ +.*LWP [0-9]+' "$TEST_TMP/gdb" || true)
((seen == 5)) || die "gdb shows $seen threads, expected 5: $(grep LWP "$TEST_TMP/gdb")"
grep -qE "^\* +1 +.*LWP $GPID\)" "$TEST_TMP/gdb" ||
	die "the current thread in gdb is not the main thread: $(grep -E '^\*' "$TEST_TMP/gdb")"
# Each thread's backtrace (gdb prints "Thread N (... (LWP TID)):" and its frames) runs through its function.
cmds=()
for i in "${!TIDS[@]}"; do
	bt=$(awk -v tid="${TIDS[i]}" '/^Thread [0-9]+ / { on = index($0, "(LWP " tid ")") > 0; next } on' "$TEST_TMP/gdb")
	for fn in read block_in_read "${FUNCS[i]}"; do
		grep -qE "(^#[0-9]+ +| in )(__GI___libc_)?$fn \(" <<<"$bt" ||
			die "gdb: the backtrace of TID ${TIDS[i]} does not go through $fn: $bt"
	done
	n=$(grep -E "^[* ] +[0-9]+ +.*\(LWP ${TIDS[i]}\)" "$TEST_TMP/gdb" | awk '{ print ($1 == "*") ? $2 : $1 }')
	[[ -n $n ]] || die "gdb lists no thread for TID ${TIDS[i]}"
	cmds+=(-ex "echo @@ ${FUNCS[i]}\\n" -ex "thread $n" -ex "frame function ${FUNCS[i]}")
	if [[ ${FUNCS[i]} == main_wait ]]; then
		cmds+=(-ex "print/x main_magic")
	else
		k=${FUNCS[i]#thread_func_}
		cmds+=(-ex "print/x magic_$k" -ex "print/x wide_$k" -ex "info locals")
	fi
done
grep -qE "^#[0-9]+ .* main \(" "$TEST_TMP/gdb" || die "gdb: the main thread's backtrace does not reach main()"
"${GDB[@]}" "${cmds[@]}" "$BIN" "$CORE" >"$TEST_TMP/gdb-locals" 2>&1 ||
	die "gdb failed: $(tail -5 "$TEST_TMP/gdb-locals")"
for fn in "${FUNCS[@]}"; do
	block=$(awk -v fn="$fn" '/^@@ / { on = ($2 == fn); next } on' "$TEST_TMP/gdb-locals")
	if [[ $fn == main_wait ]]; then
		want=("= 0x600dcafe")
	else
		k=${fn#thread_func_}
		want=("= 0x1234abc$k" "= 0xfeedface0000000$k" "magic_$k = $((0x1234abc0 + k))")
	fi
	for w in "${want[@]}"; do
		grep -qF -- "$w" <<<"$block" || die "gdb in $fn: expected '$w', got: $block"
	done
done
log "gdb: 5 threads, the main one current, each in its function with its locals' values"

rc=0
eu-stack --core="$CORE" -e "$BIN" >"$TEST_TMP/eu-stack" 2>&1 || rc=$?
((rc == 0)) || die "eu-stack exited $rc: $(head -20 "$TEST_TMP/eu-stack")"
[[ $(grep -m1 '^TID ' "$TEST_TMP/eu-stack") == "TID $GPID:" ]] || die "eu-stack does not list the main thread first"
for i in "${!TIDS[@]}"; do
	bt=$(awk -v tid="TID ${TIDS[i]}:" '/^TID / { on = ($0 == tid); next } on' "$TEST_TMP/eu-stack")
	for fn in read block_in_read "${FUNCS[i]}"; do
		grep -qE "^#[0-9]+ +0x[0-9a-f]+ $fn\$" <<<"$bt" ||
			die "eu-stack: the backtrace of TID ${TIDS[i]} does not go through $fn: $bt"
	done
done
log "eu-stack: every thread's backtrace through its function"
kill_wait "$GPID"
rm -f "$CORE"

# ---- more than 65535 segments: PN_XNUM ----
# (3000 mappings and 200 threads: export-many.sh)

MAPS=66000
if [[ ! -w /proc/sys/vm/max_map_count ]]; then
	log "PN_XNUM part not run: /proc/sys/vm/max_map_count is not writable, and $MAPS mappings need more than its $(cat /proc/sys/vm/max_map_count)"
else
	old=$(cat /proc/sys/vm/max_map_count)
	if ((old < MAPS + 1000)); then
		echo $((MAPS + 1000)) >/proc/sys/vm/max_map_count
		at_cleanup "echo $old >/proc/sys/vm/max_map_count"
	fi
	victim_start victim-many 2 "$MAPS"
	XPID=$VICTIM_PID
	IMAGE=$TEST_TMP/xnum.lsnap
	CORE=$TEST_TMP/xnum.core
	dump "$XPID" "$IMAGE"
	"$LIVESNAP" export "$IMAGE" -o "$CORE" --no-progress || die "export failed"
	# binutils' readelf checks that sh_info of every SHT_NULL section is 0, even of section 0 under
	# PN_XNUM, where the ELF ABI puts the program header count (the kernel's cores get the same).
	readelf_clean "$CORE" "^readelf: Warning: \[ 0\]: Unexpected value \([0-9]+\) in info field\.$"
	core_check "$CORE"
	((CORE_INFO[xnum] == 1)) || die "${CORE_INFO[loads]} PT_LOADs without PN_XNUM"
	((CORE_INFO[loads] > MAPS)) || die "only ${CORE_INFO[loads]} PT_LOADs for $MAPS mappings"
	[[ ${CORE_INFO[prstatus]%%,*} == "$XPID" ]] || die "the first NT_PRSTATUS is not the main thread's"
	# (no info_matches: `livesnap info` counts each mapping's stored pages over all chunks, which takes
	# seconds with this many)
	readelf -h "$CORE" | grep -qE "Number of program headers: +65535 \($((CORE_INFO[loads] + 1))\)" ||
		die "readelf does not see the PN_XNUM count: $(readelf -h "$CORE" | grep -i 'program headers')"
	"${GDB[@]}" -ex "info threads" "$VICTIMS/victim-many" "$CORE" >"$TEST_TMP/gdb" 2>&1 ||
		die "gdb failed: $(tail -5 "$TEST_TMP/gdb")"
	seen=$(grep -cE '^\*? +[0-9]+ +.*LWP [0-9]+' "$TEST_TMP/gdb" || true)
	((seen == 3)) || die "gdb shows $seen threads, expected 3: $(tail -5 "$TEST_TMP/gdb")"
	out=$TEST_TMP/xnum
	mkdir "$out"
	cp "$VICTIM_DIR/layout" "$out/"
	python3 "$TEST_TMP/core.py" extract "$CORE" "$out/layout" "$out" || die "the mappings are not all in the core"
	# victim-many: page m holds the byte m % 250 + 1.
	python3 - "$out/maps.bin" "$MAPS" <<'EOF' || die "the mappings read from the core are wrong"
import sys
data = open(sys.argv[1], "rb").read()
for m in range(int(sys.argv[2])):
    if data[m * 4096:(m + 1) * 4096] != bytes([m % 250 + 1]) * 4096:
        sys.exit("page %d of the mappings does not hold its pattern" % m)
EOF
	log "$MAPS mappings: ${CORE_INFO[loads]} PT_LOADs with PN_XNUM; readelf, eu-readelf and gdb read it"
	kill_wait "$XPID"
	rm -rf "$CORE" "$IMAGE" "$out"
fi

# ---- bad input ----

IMAGE=$TEST_TMP/gdb.lsnap
expect_exit 2 "$LIVESNAP" export "$IMAGE" --format core
expect_exit 2 "$LIVESNAP" export "$IMAGE" --format bogus -o "$TEST_TMP/x.core"
grep -q core "$TEST_TMP/err" && grep -q image "$TEST_TMP/err" ||
	die "--format bogus: the message does not name the formats: $(cat "$TEST_TMP/err")"
expect_exit 1 "$LIVESNAP" export "$TEST_TMP/no-such.lsnap" -o "$TEST_TMP/x.core"
[[ ! -e $TEST_TMP/x.core ]] || die "a failed export left its output"
head -c 100000 "$IMAGE" >"$TEST_TMP/cut.lsnap"
expect_exit 3 "$LIVESNAP" export "$TEST_TMP/cut.lsnap" -o "$TEST_TMP/cut.core"
[[ ! -e $TEST_TMP/cut.core ]] || die "a failed export left its output"
# A corrupt page chunk is found only while the core is written: still exit 3, and an existing file at
# -o is left as it was. Thread 1's stack page holds wide_1 (0xfeedface00000001), stored raw (no
# --compress): flip the byte after it.
python3 - "$IMAGE" "$TEST_TMP/bad.lsnap" <<'EOF' || die "cannot find wide_1 in the image"
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
at = data.find(struct.pack("<Q", 0xFEEDFACE00000001))
if at < 0:
    sys.exit("wide_1 is not in " + sys.argv[1])
data[at + 8] ^= 0xFF
open(sys.argv[2], "wb").write(data)
EOF
echo old >"$TEST_TMP/keep.core"
expect_exit 3 "$LIVESNAP" export "$TEST_TMP/bad.lsnap" -o "$TEST_TMP/keep.core"
[[ $(cat "$TEST_TMP/keep.core") == old ]] || die "a failed export replaced the file at -o"
ls -A "$TEST_TMP" | grep -q '^\.' && die "a failed export left a temporary file"
log "bad input refused, nothing left behind"

# --format image: a copy of the image.
"$LIVESNAP" export "$IMAGE" --format image -o "$TEST_TMP/copy.lsnap" --no-progress >/dev/null ||
	die "export --format image failed"
cmp -s "$IMAGE" "$TEST_TMP/copy.lsnap" || die "export --format image is not a copy of the image"

# Every option of export --help is documented.
"$LIVESNAP" export --help >"$TEST_TMP/help"
sed 's/\\-/-/g' "$(dirname "$0")/../../man/livesnap.1" >"$TEST_TMP/livesnap.1.txt"
for opt in $(grep -oE -- '--[a-z][a-z-]+' "$TEST_TMP/help" | sort -u); do
	[[ $opt == --help ]] || grep -qF -- "Fl ${opt#-}" "$TEST_TMP/livesnap.1.txt" ||
		die "livesnap export --help lists $opt, which man/livesnap.1 does not document"
done
log "export --format image copies; --help matches the man page"
