#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The engine's way of getting the userfaultfd where pidfd_getfd() does not exist (valgrind 3.19 fails
# it with ENOSYS), taken here on purpose with LIVESNAP_NO_PIDFD_GETFD=1: the target sends the fd as
# SCM_RIGHTS to an abstract AF_UNIX socket of the engine's (lib/snapshot.c). Checks that
#   - a root target is dumped point-in-time that way, and pidfd_getfd is never called (if strace is
#     installed), and the target is left with exactly the fds it had;
#   - an unprivileged target is too (the /dev/userfaultfd path pulls its socketpair end out the same
#     way), where vm.unprivileged_userfaultfd=0 makes that path the one taken;
#   - a target in another network namespace, which cannot reach the abstract address, is refused with
#     a message naming that and left as it was, while the ordinary path dumps it.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_root
require_uffd_wp
require_build
require_cmd jq
require_cmd unshare

fds_of() { ls /proc/"$1"/fd | sort | tr '\n' ' '; }

# dump_checked PID NAME: a fallback dump of victim-sweep PID (dir $VICTIM_DIR), point-in-time, same fds.
dump_checked() {
        local pid=$1 name=$2 dir=$VICTIM_DIR before after out
        before=$(fds_of "$pid")
        LIVESNAP_NO_PIDFD_GETFD=1 dump "$pid" "$TEST_TMP/$name.img"
        after=$(fds_of "$pid")
        [[ $before == "$after" ]] || die "$name: the target's fds changed: before [$before], after [$after]"
        verify_ok "$TEST_TMP/$name.img"
        out=$TEST_TMP/$name.check
        mkdir "$out"
        cp "$dir/layout" "$out/"
        cat_layout "$TEST_TMP/$name.img" "$out"
        victim_check victim-sweep "$out"
        assert_victim_ok "$pid" "$dir"
}

VICTIM_NICE=10 victim_start victim-sweep
dump_checked "$VICTIM_PID" root
if command -v strace >/dev/null; then
        LIVESNAP_NO_PIDFD_GETFD=1 strace -f -qq -e trace=pidfd_getfd,recvmsg -o "$TEST_TMP/strace" \
                "$LIVESNAP" dump "$VICTIM_PID" -o "$TEST_TMP/traced.img" --no-progress >/dev/null 2>"$TEST_TMP/traced.err" ||
                die "the dump under strace failed: $(cat "$TEST_TMP/traced.err")"
        ! grep -q 'pidfd_getfd(' "$TEST_TMP/strace" ||
                die "LIVESNAP_NO_PIDFD_GETFD=1, yet pidfd_getfd was called: $(grep 'pidfd_getfd(' "$TEST_TMP/strace")"
        grep -q "SCM_CREDENTIALS, cmsg_data={pid=$VICTIM_PID,.*SCM_RIGHTS" "$TEST_TMP/strace" ||
                die "no recvmsg of an fd from PID $VICTIM_PID: $(grep recvmsg "$TEST_TMP/strace" | head -n 5)"
        log "under strace: no pidfd_getfd, the uffd came from PID $VICTIM_PID over the socket"
else
        log "strace is not installed: not checking that pidfd_getfd went uncalled"
fi
kill_wait "$VICTIM_PID"

if [[ ! -e /dev/userfaultfd ]] || ! id nobody >/dev/null 2>&1; then
        log "no /dev/userfaultfd or no user 'nobody': not checking an unprivileged target"
else
        [[ $(cat /proc/sys/vm/unprivileged_userfaultfd) == 0 ]] ||
                log "note: vm.unprivileged_userfaultfd=1, so the direct path is taken and the device path is not exercised"
        VICTIM_USER=nobody VICTIM_NICE=10 victim_start victim-sweep
        dump_checked "$VICTIM_PID" nobody
        kill_wait "$VICTIM_PID"
fi

# A target in a network namespace of its own: unshare execs the victim, so the PID is the victim's.
VICTIM_DIR=$(mktemp -d "$TEST_TMP/netns.XXXXXX")
bg_start unshare --net "$VICTIMS/victim-sweep" "$VICTIM_DIR" >"$VICTIM_DIR/stdout" 2>"$VICTIM_DIR/stderr"
VPID=$BG_PID
wait_for_file "$VICTIM_DIR/ready" 30 "$VPID"
before=$(fds_of "$VPID")
rc=0
LIVESNAP_NO_PIDFD_GETFD=1 "$LIVESNAP" dump "$VPID" -o "$TEST_TMP/netns.img" --no-progress >/dev/null \
        2>"$TEST_TMP/netns.err" || rc=$?
log "netns: exit $rc: $(cat "$TEST_TMP/netns.err")"
((rc == 1)) || die "the dump of a target in another network namespace exited $rc, expected 1"
grep -q "network namespace" "$TEST_TMP/netns.err" || die "the refusal does not name the network namespace"
[[ ! -e $TEST_TMP/netns.img ]] || die "the refused dump left an image"
assert_not_stopped "$VPID" "the netns target"
assert_not_traced "$VPID" "the netns target"
[[ $(fds_of "$VPID") == "$before" ]] || die "the refused dump changed the netns target's fds"
dump "$VPID" "$TEST_TMP/netns-pidfd.img"
verify_ok "$TEST_TMP/netns-pidfd.img"
log "with pidfd_getfd the same target dumps fine"

log "the fallback without pidfd_getfd dumps consistently and refuses what it cannot reach"
