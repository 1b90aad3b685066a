#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# hugetlb memory rewritten during the dump: one cut per sweep (2 MiB pages are saved and un-protected
# whole). Reserves its huge pages and gives them back.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
[[ -w /proc/sys/vm/nr_hugepages ]] || skip "cannot reserve huge pages (/proc/sys/vm/nr_hugepages not writable)"

old=$(cat /proc/sys/vm/nr_hugepages)
at_cleanup "echo $old >/proc/sys/vm/nr_hugepages"
echo $((old + 8)) >/proc/sys/vm/nr_hugepages
(($(cat /proc/sys/vm/nr_hugepages) >= old + 4)) || skip "the kernel would not reserve 2 MiB huge pages"

victim_start victim-hugetlb
for round in 1 2 3; do
	IMAGE=$TEST_TMP/huge-$round.lsnap
	dump "$VICTIM_PID" "$IMAGE"
	out=$TEST_TMP/check-$round
	mkdir "$out"
	cp "$VICTIM_DIR/layout" "$out/"
	cat_layout "$IMAGE" "$out"
	victim_check victim-hugetlb "$out"
done
assert_victim_ok "$VICTIM_PID" "$VICTIM_DIR"
log "hugetlb memory: three consistent dumps"
