#!/usr/bin/env bash
# `make image`: builds the operator image from ./Dockerfile and writes its OCI archive.
#
#   podman present  build with hack/image/podman.sh (the project's store and settings)
#                   on the Debian base from build-base.sh, or on $PYTHON_IMAGE if set;
#   else docker     `docker build` on the Dockerfile's default base (the official
#                   Python image; needs a registry), or on $PYTHON_IMAGE;
#   neither         fails, naming the Debian packages to install.
#
# Installs nothing. Result: $IMAGE (default localhost/blooio-operator:dev) and $ARCHIVE
# (default .build/image/blooio-operator.oci.tar); $REVISION overrides the git revision
# label. Interface: hack/image/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

IMAGE="${IMAGE:-localhost/blooio-operator:dev}"
ARCHIVE="${ARCHIVE:-$root/.build/image/blooio-operator.oci.tar}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if command -v podman >/dev/null 2>&1; then
    engine=("$here/podman.sh")
elif command -v docker >/dev/null 2>&1; then
    engine=(docker)
else
    cat >&2 <<'EOF'
make image: no container engine found (podman or docker).
On Debian (bookworm), install podman and the tools the build uses, as root:
  apt-get install podman buildah runc uidmap fuse-overlayfs slirp4netns mmdebstrap skopeo
(`bash .ci/run` does this itself when it runs as root.)
EOF
    exit 1
fi

revision="${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
if [ -z "${REVISION:-}" ] && [ "$revision" != unknown ] \
    && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision-dirty"
fi
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
# The labels that change from build to build are also given with --label. buildah's layer
# cache ignores an ARG used only by LABEL (containers/buildah#5501): a build at a new
# commit whose files are unchanged would reuse the old LABEL step and carry the old
# revision. A --label is applied at commit, outside that cache.
args=(
    --build-arg "VERSION=$version"
    --build-arg "REVISION=$revision"
    --label "org.opencontainers.image.version=$version"
    --label "org.opencontainers.image.revision=$revision"
    --tag "$IMAGE"
)
if [ -n "${SOURCE:-}" ]; then
    args+=(--build-arg "SOURCE=$SOURCE" --label "org.opencontainers.image.source=$SOURCE")
fi

start=$SECONDS
if [ "${engine[0]}" = docker ]; then
    [ -z "${PYTHON_IMAGE:-}" ] || args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
    docker build "${args[@]}" .
    mkdir -p "$(dirname "$ARCHIVE")"
    echo "docker: no OCI archive written (docker save writes a docker archive):" >&2
    echo "  docker save -o .build/image/blooio-operator.docker.tar $IMAGE" >&2
    exit 0
fi

base="${PYTHON_IMAGE:-}"
if [ -z "$base" ]; then
    base="$("$here/build-base.sh" | tail -n 1)"
    args+=(--pull=never)  # made here; no registry to ask
fi
args+=(--build-arg "PYTHON_IMAGE=$base")
# HTTPS from build steps (pip) may go through a TLS-intercepting proxy that only the
# host trusts: the host's CA bundle is bind-mounted read-only into RUN steps. A bind
# mount is never part of a layer, so the image keeps its base's bundle.
if [ -f "$CA_BUNDLE" ]; then
    args+=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
# Host network: RUN steps reach PyPI without podman setting up a bridge and NAT.
"${engine[@]}" build --network host "${args[@]}" .
echo "built $IMAGE on $base in $((SECONDS - start)) s" >&2

# The archive is written again only when the image changed (saving takes about 10 s).
mkdir -p "$(dirname "$ARCHIVE")"
id="$("${engine[@]}" image inspect --format '{{.Id}}' "$IMAGE")"
if [ ! -f "$ARCHIVE" ] || [ "$(cat "$ARCHIVE.id" 2>/dev/null)" != "$id $IMAGE" ]; then
    rm -f "$ARCHIVE.tmp" "$ARCHIVE.id"
    "${engine[@]}" save --format oci-archive -o "$ARCHIVE.tmp" "$IMAGE"
    mv -f "$ARCHIVE.tmp" "$ARCHIVE"
    echo "$id $IMAGE" >"$ARCHIVE.id"
fi
# Untagged images are the layer cache of earlier builds (a source change leaves about
# 240 MB behind): the last hour's stay.
"${engine[@]}" image prune -f --filter until=1h >/dev/null
"${engine[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE" >&2
echo "OCI archive: ${ARCHIVE#"$root"/}" >&2
