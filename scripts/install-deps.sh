#!/usr/bin/env bash
# Installs what livesnap needs to build and to run its tests, on Debian 12 as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: run as root (apt-get)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	build-essential pkg-config \
	libsystemd-dev libjson-c-dev libxxhash-dev libzstd-dev \
	libseccomp-dev libcap-dev libbsd-dev libcmocka-dev \
	groff-base groff mandoc \
	util-linux procps psmisc jq gdb elfutils dbus python3-dbus systemd systemd-container strace clang valgrind \
	>/dev/null
