#!/usr/bin/env bash
# podman with blooio-operator's configuration and image store. Anything that needs
# the images `make image` builds goes through this script, e.g.
#   hack/image/podman.sh images
#   hack/image/podman.sh save --format oci-archive -o x.tar localhost/blooio-operator:dev
# Configuration: hack/image/containers.conf (CONTAINERS_CONF), a storage.conf made
# from hack/image/storage.conf.in (CONTAINERS_STORAGE_CONF), hack/image/registries.conf
# (CONTAINERS_REGISTRIES_CONF). Store: $BLOOIO_CACHE_DIR/containers (default
# ~/.cache/blooio-operator/containers). See hack/image/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v podman >/dev/null 2>&1; then
    echo "podman is not installed. On Debian (bookworm) install, as root:" >&2
    echo "  apt-get install podman buildah runc uidmap fuse-overlayfs slirp4netns mmdebstrap skopeo" >&2
    echo "(bash .ci/run does this itself when it runs as root.)" >&2
    exit 127
fi

cache="${BLOOIO_CACHE_DIR:-$HOME/.cache/blooio-operator}/containers"
# Runtime state (runroot, libpod tmpdir) is per store: two caches never share it.
store_id="$(printf '%s' "$cache" | sha256sum | cut -c1-8)"
if [ "$(id -u)" = 0 ]; then
    run="/run/blooio-operator/containers-$store_id"
else
    run="${XDG_RUNTIME_DIR:-/tmp}/blooio-operator-containers-$(id -u)-$store_id"
fi
mkdir -p "$cache/storage" "$run"

conf="$cache/storage.conf"
want="$(sed -e "s|@GRAPHROOT@|$cache/storage|" -e "s|@RUNROOT@|$run/storage|" "$here/storage.conf.in")"
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    printf '%s\n' "$want" >"$conf.$$"
    mv -f "$conf.$$" "$conf"
fi

export CONTAINERS_CONF="$here/containers.conf"
export CONTAINERS_STORAGE_CONF="$conf"
export CONTAINERS_REGISTRIES_CONF="$here/registries.conf"
exec podman --tmpdir "$run/libpod" "$@"
