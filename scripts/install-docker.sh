#!/usr/bin/env bash
# Install Debian's docker.io for the side-by-side benchmarks WITHOUT starting the system dockerd
# (it would add NAT rules and turn on forwarding): the benchmarks start their own dockerd with
# --iptables=false --ip-forward=false and remove it afterwards.
set -euo pipefail
[ -x /usr/sbin/dockerd ] && exit 0
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
    systemctl mask docker.service docker.socket >/dev/null 2>&1 || true
fi
[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
