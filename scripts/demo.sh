#!/usr/bin/env bash
# The main job, end to end: install what is needed, build, start a demo target whose threads keep
# rewriting their memory, take a live checkpoint of it, show what was taken, and check from the image
# that the copy is point-in-time (every region shows one cut between two sweeps, nothing newer).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: run as root (it installs packages and attaches to a process)" >&2
	exit 1
fi

scripts/install-deps.sh
make -j"$(nproc)" tests >/dev/null

dir=$(mktemp -d /var/tmp/livesnap-demo.XXXXXX)
target=
trap '[ -n "$target" ] && kill "$target" 2>/dev/null; rm -rf "$dir"' EXIT

build/tests/victims/victim-sweep "$dir" >"$dir/victim.log" 2>&1 &
target=$!
for _ in $(seq 100); do [ -e "$dir/ready" ] && break; sleep 0.1; done
[ -e "$dir/ready" ] || { echo "demo target did not start: $(cat "$dir/victim.log")" >&2; exit 1; }

echo "== Demo target: PID $target, threads sweeping generation numbers over anonymous, THP, memfd,"
echo "   heap, .bss and .data memory"
echo
echo "== livesnap dump $target"
build/livesnap dump "$target" -o "$dir/demo.lsnap"
echo
echo "== livesnap info (abridged)"
build/livesnap info "$dir/demo.lsnap" | head -n 30
echo
echo "== livesnap verify"
build/livesnap verify "$dir/demo.lsnap"
echo
echo "== Point-in-time check from the image (livesnap cat of every region)"
while read -r name addr len; do
	build/livesnap cat "$dir/demo.lsnap" "$addr" "$len" >"$dir/$name.bin"
done <"$dir/layout"
build/tests/victims/victim-sweep --check "$dir"
echo "one cut per sweep in every region, no value newer than the counter: consistent"
echo
echo "== livesnap export (ELF core) and gdb's view of it"
build/livesnap export "$dir/demo.lsnap" -o "$dir/demo.core" --no-progress
gdb -batch -nx -ex "info threads" build/tests/victims/victim-sweep "$dir/demo.core" 2>/dev/null | grep -E "^\*? +[0-9]+ +Thread" || true
echo
kill -0 "$target" && echo "the target is still running"
