#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A target running as an unprivileged user may not call userfaultfd() itself (no CAP_SYS_PTRACE,
# vm.unprivileged_userfaultfd=0). livesnap then hands it /dev/userfaultfd over a socketpair and has it
# create the uffd with USERFAULTFD_IOC_NEW. The dump must be point-in-time, and the target must be left
# with exactly the file descriptors it had.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_uffd_wp
require_build
[[ -e /dev/userfaultfd ]] || skip "needs /dev/userfaultfd (Linux 6.1 or newer)"
[[ $(cat /proc/sys/vm/unprivileged_userfaultfd) == 0 ]] ||
	log "note: vm.unprivileged_userfaultfd=1, so the direct path is taken and the device path is not exercised"
id nobody >/dev/null 2>&1 || skip "needs the user 'nobody'"

VICTIM_USER=nobody victim_start victim-sweep
VPID=$VICTIM_PID
VDIR=$VICTIM_DIR
IMAGE=$TEST_TMP/nonroot.img

fds_before=$(ls /proc/"$VPID"/fd | sort | tr '\n' ' ')
dump "$VPID" "$IMAGE"
fds_after=$(ls /proc/"$VPID"/fd | sort | tr '\n' ' ')
[[ $fds_before == "$fds_after" ]] ||
	die "the target's file descriptors changed: before [$fds_before], after [$fds_after]"

verify_ok "$IMAGE"
out=$TEST_TMP/check
mkdir "$out"
cp "$VDIR/layout" "$out/"
cat_layout "$IMAGE" "$out"
victim_check victim-sweep "$out"
assert_victim_ok "$VPID" "$VDIR"
log "an unprivileged target was checkpointed through /dev/userfaultfd, consistently"
