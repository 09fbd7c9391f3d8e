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
[ "${1:-}" = "--test" ] && extra="[test]"
# PEP 668: Debian's own python refuses system-wide pip installs without this flag.
pip_flags=(-q)
python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages \
  && pip_flags+=(--break-system-packages)
python3 -m pip install "${pip_flags[@]}" -e ".${extra}"
echo "fiovpn installed: $(command -v fiovpn)"
