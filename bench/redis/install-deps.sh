#!/bin/sh
# What bench/redis/run.sh needs beyond the project's own dependencies (scripts/install-deps.sh):
# Debian's Redis server and tools, gnuplot for the plot, gdb for gcore, jq and GNU time.
# The redis-server package's own service is not used (run.sh starts a private server); on a
# systemd machine you may stop it: systemctl disable --now redis-server
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends redis-server redis-tools gnuplot-nox gdb jq time gcc libc6-dev
