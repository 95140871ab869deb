#!/usr/bin/env bash
# The Debian packages the local e2e node needs: containerd 1.6 and runc (container
# runtime), the CNI plugins (bridge, host-local, loopback), iptables (the `kubernetes`
# Service rule) and iproute2. As root, installs the missing ones with apt-get; otherwise
# names them and fails. Used by `make e2e` and `.ci/run`.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables iproute2)
missing=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "e2e: missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "e2e: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
