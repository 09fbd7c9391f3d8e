#!/usr/bin/env bash
# Install everything fiovpn needs on Debian, as root: the system tools, then the
# package (with test tools when given --test). Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  python3 python3-pip python3-venv \
  wireguard-tools wireguard-go openssh-server openssh-client nftables iproute2 iputils-ping \
  >/dev/null
extra=""
if [ "${1:-}" = "--test" ]; then
  extra="[test]"
  # The tests' real parts: Prometheus scrapes the daemon, headless Chromium shows
  # the dashboard, rsync copies over the ssh-config fragment, keepalived moves the
  # HA lab's VIP (inside its namespaces only), `nmcli --offline` (no daemon) reads
  # keyfiles, sudo lets a non-root lab device user in. Their packaged services must
  # never start here (policy-rc.d 101); NetworkManager must not run.
  guard=/usr/sbin/policy-rc.d
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 0755 "$guard"
    trap 'rm -f "$guard"' EXIT  # removed again even when apt-get fails
  fi
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    prometheus chromium chromium-driver rsync keepalived network-manager sudo procps \
    >/dev/null
  if pgrep -x NetworkManager >/dev/null; then
    echo "NetworkManager is running on this machine: stop it (the tests need only nmcli)" >&2
    exit 1
  fi
fi
# PEP 668: Debian's own python refuses system-wide pip installs without this flag.
pip_flags=(-q)
python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages \
  && pip_flags+=(--break-system-packages)
python3 -m pip install "${pip_flags[@]}" -e ".${extra}"
echo "fiovpn installed: $(command -v fiovpn)"
