#!/usr/bin/env bash
# The end-to-end scenario (hack/e2e/scenario.sh) on a kind cluster, for machines with
# Docker and kind: build the image, load it into kind, run the scenario. The scenario is
# the one `make e2e` runs on the local node; here pods reach the simulator through its
# Service (kind has cluster DNS and kube-proxy).
#
#   hack/kind-e2e.sh
#
# Environment:
#   CLUSTER_NAME   kind cluster to use or create          (default blooio-e2e)
#   IMAGE          image tag to build and deploy           (default localhost/blooio-operator:dev)
#   KEEP_CLUSTER   1 keeps a cluster this script created   (default: delete it)
#   TIMEOUT, KEEP  passed to the scenario (see hack/e2e/scenario.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-blooio-e2e}"
IMAGE="${IMAGE:-localhost/blooio-operator:dev}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
created_cluster=0
kubeconfig="$(mktemp)"

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl python3; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} is required"
done

cleanup() {
  local rc=$?
  rm -f "${kubeconfig}"
  if [[ ${created_cluster} -eq 1 && ${KEEP_CLUSTER} != 1 ]]; then
    log "deleting kind cluster ${CLUSTER_NAME} (KEEP_CLUSTER=1 keeps it)"
    kind delete cluster --name "${CLUSTER_NAME}" || true
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

if ! kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  log "creating kind cluster ${CLUSTER_NAME}"
  kind create cluster --name "${CLUSTER_NAME}" --wait 120s
  created_cluster=1
fi

log "building ${IMAGE}"
docker build -t "${IMAGE}" "${ROOT}"
kind load docker-image "${IMAGE}" --name "${CLUSTER_NAME}"

KUBECONFIG="${kubeconfig}"
kind get kubeconfig --name "${CLUSTER_NAME}" >"${KUBECONFIG}"
export KUBECONFIG IMAGE
ADDRESSING=service "${ROOT}/hack/e2e/scenario.sh"
