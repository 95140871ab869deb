#!/usr/bin/env bash
# `make release`: the release artifacts of this tree's version, in .build/release/<version>/
#
#   blooio-operator-<v>.oci.tar        the operator image (OCI archive; image name
#                                      ghcr.io/blooio-operator/blooio-operator:<v>)
#   blooio-operator-<v>.tgz            the Helm chart (helm package)
#   blooio-operator-<v>.yaml           the install manifest for `kubectl apply -f`
#                                      (kubectl kustomize deploy/: CRD, namespace, operator)
#   blooio-operator-<v>.spdx.json      SPDX SBOM of the image (syft, from the Go module proxy)
#   SHA256SUMS                         sha256sum of the four
#
# The version is the chart's appVersion, which deploy/ must ship too. Everything comes
# from the checkout and the project's caches: helm and syft are built once by
# operator/devenv/gotools.py, the image by hack/image/build.sh (podman). Publishing and
# signing are not done here: docs/operations.md, "Release".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="${PYTHON:-$root/.venv/bin/python}"
chart="deploy/chart/blooio-operator"

version="$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$chart/Chart.yaml")"
chart_version="$(sed -n 's/^version: \(.*\)$/\1/p' "$chart/Chart.yaml")"
shipped="$(sed -n 's/^    newTag: \(.*\)$/\1/p' deploy/manifests/kustomization.yaml)"
[ -n "$version" ] || { echo "release: no appVersion in $chart/Chart.yaml" >&2; exit 1; }
[ "$version" = "$shipped" ] || {
    echo "release: the chart's appVersion $version is not deploy/'s image tag $shipped" >&2
    exit 1
}
out="$root/.build/release/$version"
rm -rf "$out"
mkdir -p "$out"
image="ghcr.io/blooio-operator/blooio-operator:$version"
log() { printf '==> %s\n' "$*" >&2; }

log "tools: helm and syft (built once into ~/.cache/blooio-operator/tools)"
helm="$("$py" -m blooio_operator.devenv.gotools helm)"
syft="$("$py" -m blooio_operator.devenv.gotools syft)"

log "chart: generated files up to date, helm lint --strict"
"$py" hack/chart/generate.py --check
"$helm" lint --strict "$chart" >/dev/null

log "image $image"
IMAGE="$image" ARCHIVE="$out/blooio-operator-$version.oci.tar" hack/image/build.sh
rm -f "$out/blooio-operator-$version.oci.tar.id"

log "chart package"
# helm package records each file's mtime: from a copy stamped with the commit's time, the
# .tgz is the same bytes from any clone of the same commit.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -r "$chart" "$stage/"
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
find "$stage" -exec touch -h -d "@$epoch" {} +
"$helm" package "$stage/$(basename "$chart")" --destination "$out" >/dev/null
[ -f "$out/blooio-operator-$chart_version.tgz" ]

log "install manifest (kubectl kustomize deploy/)"
{
    echo "# blooio-operator $version: CRD, namespace and operator. kubectl apply -f this file,"
    echo "# then create the blooio-credentials Secret (docs/operations.md, Install)."
    kubectl kustomize deploy/
} >"$out/blooio-operator-$version.yaml"

log "SBOM (syft, SPDX JSON)"
SYFT_CHECK_FOR_APP_UPDATE=false "$syft" scan -q "oci-archive:$out/blooio-operator-$version.oci.tar" \
    --source-name blooio-operator --source-version "$version" \
    -o "spdx-json=$out/blooio-operator-$version.spdx.json"

log "checksums"
(cd "$out" && sha256sum -- * >SHA256SUMS)
echo "release $version in ${out#"$root"/}:" >&2
(cd "$out" && ls -l --time-style=+ -- * | awk '{printf "  %10d  %s\n", $5, $NF}' && cat SHA256SUMS) >&2
