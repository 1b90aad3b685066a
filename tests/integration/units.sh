#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The systemd units verify (the template through an instance too), livesnapd.service's exposure is at
# most 4.0 and livesnapd-spawner.service's at most 5.8 (what it measures with no option that installs a
# seccomp filter; livesnapd(8)), the spawner's unit sets none of those options, the timer's default
# schedule parses, and `make install DESTDIR=...` lays out every file and `make uninstall` removes them
# again.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_cmd systemd-analyze
require_build
top=$(cd "$(dirname "$0")/../.." && pwd)

# Units with their paths pointing at this build, so the verifier finds the programs.
units=$TEST_TMP/units
mkdir "$units"
for u in livesnapd.service livesnapd-spawner.service livesnapd-spawner.socket livesnap-checkpoint@.service \
	livesnap-checkpoint@.timer; do
	sed -e "s|@SBINDIR@|$BUILD|g" -e "s|@BINDIR@|$BUILD|g" "$top/systemd/$u" >"$units/$u"
done
ln -s livesnap-checkpoint@.service "$units/livesnap-checkpoint@redis-server.service"
ln -s livesnap-checkpoint@.timer "$units/livesnap-checkpoint@redis-server.timer"
cat >"$units/redis-server.service" <<EOF2
[Service]
ExecStart=/bin/sleep infinity
EOF2

export SYSTEMD_UNIT_PATH=$units:
for u in livesnapd.service livesnapd-spawner.service livesnapd-spawner.socket \
	livesnap-checkpoint@redis-server.service livesnap-checkpoint@redis-server.timer; do
	out=$(systemd-analyze verify --man=no "$units/$u" 2>&1) || die "systemd-analyze verify $u failed: $out"
	[[ -z $out ]] || die "systemd-analyze verify $u warns: $out"
	log "$u verifies"
done

# exposure UNIT: systemd-analyze's overall exposure level of UNIT.
exposure() {
	systemd-analyze security --offline=yes "$units/$1" 2>&1 |
		sed -n "s/.*Overall exposure level for $1: \([0-9.]*\).*/\1/p"
}
# check_exposure UNIT BOUND
check_exposure() {
	local e
	e=$(exposure "$1")
	[[ -n $e ]] || die "systemd-analyze security printed no exposure level for $1"
	awk -v e="$e" -v b="$2" 'BEGIN { exit !(e <= b) }' || die "$1 exposure $e is above $2"
	log "$1 exposure: $e (at most $2)"
}
check_exposure livesnapd.service 4.0
check_exposure livesnapd-spawner.service 5.8

# The spawner's workers must be able to suspend a target's seccomp filter: no option of its unit may put
# them under one (systemd.exec(5): each of these installs a filter).
for o in SystemCallFilter SystemCallArchitectures SystemCallLog RestrictAddressFamilies RestrictNamespaces \
	RestrictRealtime RestrictSUIDSGID LockPersonality MemoryDenyWriteExecute ProtectClock ProtectHostname \
	ProtectKernelLogs ProtectKernelModules ProtectKernelTunables PrivateDevices; do
	! grep -q "^$o=" "$units/livesnapd-spawner.service" || die "livesnapd-spawner.service sets $o=, which installs a seccomp filter"
done
grep -q "^ExecStart=.*--spawner-socket=/run/livesnap/spawner.sock" "$units/livesnapd.service" &&
	grep -q "^ListenSequentialPacket=/run/livesnap/spawner.sock$" "$units/livesnapd-spawner.socket" &&
	grep -q "^SocketMode=0600$" "$units/livesnapd-spawner.socket" ||
	die "livesnapd.service and livesnapd-spawner.socket do not agree on a 0600 spawner socket"
log "livesnapd-spawner.service sets no option that installs a seccomp filter; its socket is livesnapd.service's, 0600"

schedule=$(sed -n 's/^OnCalendar=//p' "$top/systemd/livesnap-checkpoint@.timer")
systemd-analyze calendar "$schedule" >/dev/null || die "the default schedule '$schedule' does not parse"
log "default schedule '$schedule' parses"

dest=$TEST_TMP/dest
make -s -C "$top" BUILD="$BUILD" DESTDIR="$dest" install >/dev/null || die "make install failed"
for f in /usr/bin/livesnap /usr/sbin/livesnapd /usr/lib/liblivesnap.so.0 /usr/include/livesnap.h \
	/usr/lib/systemd/system/livesnapd.service /usr/lib/systemd/system/livesnapd-spawner.service \
	/usr/lib/systemd/system/livesnapd-spawner.socket /usr/lib/systemd/system/livesnap-checkpoint@.service \
	/usr/lib/systemd/system/livesnap-checkpoint@.timer /usr/share/dbus-1/system.d/org.livesnap1.conf \
	/usr/share/dbus-1/system-services/org.livesnap1.service /usr/share/man/man1/livesnap.1 \
	/usr/share/man/man8/livesnapd.8 /usr/share/man/man5/livesnap.json.5 /usr/share/man/man5/livesnap-image.5 \
	/usr/share/doc/livesnap/livesnap.json.example; do
	[[ -e $dest$f ]] || die "make install did not install $f"
done
for u in livesnapd.service livesnapd-spawner.service; do
	grep -q "ExecStart=/usr/sbin/livesnapd" "$dest/usr/lib/systemd/system/$u" ||
		die "the installed $u does not run /usr/sbin/livesnapd"
done
make -s -C "$top" BUILD="$BUILD" DESTDIR="$dest" uninstall >/dev/null || die "make uninstall failed"
left=$(find "$dest" -type f -o -type l)
[[ -z $left ]] || die "make uninstall left: $left"
log "make install lays out every file; make uninstall removes them"
