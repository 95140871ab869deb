#!/usr/bin/env bash
# Builds the Debian base image for machines that cannot reach a container registry:
# `mmdebstrap --variant=minbase` of Debian bookworm with the packages listed in
# hack/image/base-packages.txt, imported into the project's podman store as
#   localhost/blooio-operator-base:<hash>
# where <hash> covers every input (this script, the package list, suite and mirrors).
# An image that already exists under that name is reused; downloaded .debs are kept in
# $BLOOIO_CACHE_DIR/base/debs (default ~/.cache/blooio-operator/base/debs) so that a
# rebuild after an input change downloads nothing that is still current.
# Prints the image name on its last line of stdout. Needs mmdebstrap; runs as root
# (mmdebstrap --mode=root) or, unprivileged, with --mode=unshare (uidmap needed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
podman="$here/podman.sh"

SUITE="${BASE_SUITE:-bookworm}"
MIRRORS=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)
packages="$(grep -v '^\s*#' "$here/base-packages.txt" | grep -v '^\s*$' | tr '\n' ',' | sed 's/,$//')"
hash="$({ cat "$0" "$here/base-packages.txt"; printf '%s\n' "$SUITE" "${MIRRORS[@]}"; } | sha256sum | cut -c1-16)"
name="localhost/blooio-operator-base:$hash"

if "$podman" image exists "$name"; then
    echo "base image $name is up to date" >&2
    echo "$name"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "mmdebstrap is not installed. On Debian: apt-get install mmdebstrap" >&2
    exit 127
fi
mode=root
[ "$(id -u)" = 0 ] || mode=unshare

cache="${BLOOIO_CACHE_DIR:-$HOME/.cache/blooio-operator}/base"
debs="$cache/debs"
work="$cache/work.$$"
mkdir -p "$debs" "$work"
trap 'rm -rf "$work"' EXIT

echo "building base image $name (mmdebstrap $SUITE: $packages)" >&2
start=$SECONDS
# merged-/usr comes from mmdebstrap's hook (symlinks + usr-is-merged) rather than the
# usrmerge package, which would bring perl (about 50 MB) into the image. The .deb cache
# goes in before the download and comes back out after it; apt then only fetches what
# is missing. Docs, man pages and translations are never unpacked. The machine's
# hostname and resolv.conf, which mmdebstrap copies in, do not stay in the image.
mmdebstrap \
    --variant=minbase \
    --mode="$mode" \
    --format=tar \
    --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --skip=download/empty \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $debs /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $debs" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook='rm -f "$1"/etc/hostname "$1"/etc/resolv.conf' \
    --customize-hook='touch "$1"/etc/hostname "$1"/etc/resolv.conf' \
    "$SUITE" "$work/rootfs.tar" "${MIRRORS[@]}" >&2
"$podman" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "mmdebstrap --variant=minbase $SUITE + $packages" \
    "$work/rootfs.tar" "$name" >&2
echo "base image $name built in $((SECONDS - start)) s" >&2
# Earlier bases (other input hashes) are dropped, unless an image still uses them.
for old in $("$podman" images --format '{{.Repository}}:{{.Tag}}' localhost/blooio-operator-base); do
    [ "$old" = "$name" ] || "$podman" rmi "$old" >/dev/null 2>&1 || true
done
echo "$name"
