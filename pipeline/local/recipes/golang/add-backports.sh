#!/bin/sh
# Enable bookworm-backports on the mirror the image already uses (without naming any mirror here).
# Handles both source formats: one-line sources.list (debootstrap) and deb822 debian.sources (upstream images).
set -eu
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed -i 's/^Suites: bookworm bookworm-updates$/Suites: bookworm bookworm-updates bookworm-backports/' \
        /etc/apt/sources.list.d/debian.sources
fi
if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \([^ ]*\) bookworm main$/deb \1 bookworm-backports main/p' /etc/apt/sources.list \
        > /etc/apt/sources.list.d/backports.list
fi
grep -rq bookworm-backports /etc/apt/sources.list.d/ || { echo "no Debian source to extend with backports" >&2; exit 1; }
