#!/usr/bin/env bash
# Installs the Debian packages the embedded cluster and the image build need.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail
packages=(
  containerd runc containernetworking-plugins   # the real node's runtime and CNI
  iptables conntrack iproute2 ethtool socat      # kube-proxy, kubelet, port-forward
  debootstrap gcc libc6-dev                      # the offline toolbox and pause images
  docker.io                                      # the kind provider (kfs starts dockerd itself)
  tmux                                           # driving `kfs gameday` like a user
  chromium fonts-dejavu-core                     # rendering report.html in a test
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-system: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# docker.io's maintainer script would start a dockerd, which turns the FORWARD
# policy to DROP beside the local node; kfs starts its own dockerd when the kind
# provider needs it (host/docker_engine.py). invoke-rc.d asks policy-rc.d, and
# 101 means "do not start": keep a host's own policy-rc.d, else add one for now.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# kfs install-system: no service starts during this install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# containerd's package enables a system service with its own config; the local
# provider runs its own containerd, so keep the distro one out of the way.
if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi
