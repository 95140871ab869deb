#!/usr/bin/env bash
# End-to-end check on a kind cluster, for machines with Docker:
# build the image, load it into kind, install with `kubectl apply -k deploy/`,
# apply the examples and wait until the BlooioWebhook is Ready.
#
#   hack/kind-e2e.sh
#
# By default Blooio is the simulator shipped in the same image (run in-cluster with
# `blooio-operator simulate`), so no real API key is needed, and the script also
# delivers a signed event to the example receiver and expects it to answer 204.
# With BLOOIO_API_KEY set (and optionally BLOOIO_API_URL), the real Blooio API is
# used instead and the delivery check is skipped.
#
# Environment:
#   CLUSTER_NAME   kind cluster to use or create          (default blooio-e2e)
#   IMAGE          image tag to build and deploy           (default: the tag in deploy/)
#   BLOOIO_API_KEY real Blooio key (switches off the simulator)
#   BLOOIO_API_URL real Blooio base URL                    (default https://api.blooio.com/v4)
#   KEEP_CLUSTER   1 keeps a cluster this script created   (default: delete it)
#   TIMEOUT        kubectl wait timeout                    (default 180s)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-blooio-e2e}"
IMAGE="${IMAGE:-ghcr.io/blooio-operator/blooio-operator:0.1.0}"
TIMEOUT="${TIMEOUT:-180s}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
NS=blooio-system
SIM_KEY=bl_live_kind_e2e_key
CONTEXT="kind-${CLUSTER_NAME}"
created_cluster=0

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
k() { kubectl --context "${CONTEXT}" "$@"; }

for tool in docker kind kubectl; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} is required"
done

cleanup() {
  local rc=$?
  if [[ ${rc} -ne 0 ]]; then
    log "failed; operator logs:"
    k -n "${NS}" logs deploy/blooio-operator --tail=100 || true
    k -n shop get bwh -o wide || true
  fi
  if [[ ${created_cluster} -eq 1 && ${KEEP_CLUSTER} != 1 ]]; then
    log "deleting kind cluster ${CLUSTER_NAME} (KEEP_CLUSTER=1 keeps it)"
    kind delete cluster --name "${CLUSTER_NAME}" || true
  fi
  exit "${rc}"
}
trap cleanup EXIT

if ! kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  log "creating kind cluster ${CLUSTER_NAME}"
  kind create cluster --name "${CLUSTER_NAME}" --wait 120s
  created_cluster=1
fi

log "building ${IMAGE}"
docker build -t "${IMAGE}" "${ROOT}"
kind load docker-image "${IMAGE}" --name "${CLUSTER_NAME}"

log "installing the CRD and the operator (kubectl apply -k deploy/)"
k apply -k "${ROOT}/deploy"
k wait --for=condition=Established crd/blooiowebhooks.blooio.com --timeout="${TIMEOUT}"
if [[ "${IMAGE}" != "ghcr.io/blooio-operator/blooio-operator:0.1.0" ]]; then
  k -n "${NS}" set image deploy/blooio-operator operator="${IMAGE}"
fi

if [[ -n "${BLOOIO_API_KEY:-}" ]]; then
  api_key="${BLOOIO_API_KEY}"
  api_url="${BLOOIO_API_URL:-https://api.blooio.com/v4}"
  use_simulator=0
else
  log "no BLOOIO_API_KEY: running the Blooio simulator in-cluster"
  api_key="${SIM_KEY}"
  api_url="http://blooio-simulator.${NS}.svc:8080/v4"
  use_simulator=1
  k apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: blooio-simulator
  namespace: ${NS}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: blooio-simulator}
  template:
    metadata:
      labels: {app.kubernetes.io/name: blooio-simulator}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: simulator
          image: ${IMAGE}
          imagePullPolicy: IfNotPresent
          args: [simulate, --host, 0.0.0.0, --port, "8080", --api-key, ${SIM_KEY}]
          ports: [{name: http, containerPort: 8080}]
          readinessProbe:
            tcpSocket: {port: http}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: blooio-simulator
  namespace: ${NS}
spec:
  selector: {app.kubernetes.io/name: blooio-simulator}
  ports: [{name: http, port: 8080, targetPort: http}]
---
# The shipped NetworkPolicy allows egress to 443/6443 only; allow the simulator too.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: blooio-operator-to-simulator
  namespace: ${NS}
spec:
  podSelector:
    matchLabels: {app.kubernetes.io/name: blooio-operator}
  policyTypes: [Egress]
  egress:
    - to:
        - podSelector:
            matchLabels: {app.kubernetes.io/name: blooio-simulator}
      ports: [{port: 8080, protocol: TCP}]
EOF
  k -n "${NS}" rollout status deploy/blooio-simulator --timeout="${TIMEOUT}"
fi

log "default credentials Secret and API URL"
k -n "${NS}" create secret generic blooio-credentials \
  --from-literal=api-key="${api_key}" --dry-run=client -o yaml | k apply -f -
k -n "${NS}" set env deploy/blooio-operator BLOOIO_API_URL="${api_url}"
k -n "${NS}" rollout status deploy/blooio-operator --timeout="${TIMEOUT}"

log "applying the examples (kubectl apply -k examples/)"
k apply -k "${ROOT}/examples"
k -n shop wait bwh/orders --for=condition=Ready --timeout="${TIMEOUT}"
k -n shop get bwh orders -o wide

webhook_id="$(k -n shop get bwh orders -o jsonpath='{.status.webhookId}')"
[[ -n "${webhook_id}" ]] || die "status.webhookId is empty"
secret_b64="$(k -n shop get secret orders-blooio-webhook -o jsonpath='{.data.signing-secret}')"
[[ -n "${secret_b64}" ]] || die "Secret orders-blooio-webhook has no signing-secret"
log "webhook ${webhook_id} is Ready and its signing secret is in Secret shop/orders-blooio-webhook"

if [[ ${use_simulator} -eq 1 ]]; then
  log "delivering a signed event from the simulator to the example receiver"
  k -n shop rollout status deploy/orders-receiver --timeout="${TIMEOUT}"
  status="$(k -n "${NS}" exec deploy/blooio-simulator -- python -c '
import sys, httpx
r = httpx.post(
    f"http://127.0.0.1:8080/_sim/webhooks/{sys.argv[1]}/deliver",
    json={"event_type": "message.received", "target_url": "http://orders-receiver.shop.svc/"},
    timeout=30,
)
r.raise_for_status()
print(r.json()["data"]["response_status"])
' "${webhook_id}")"
  [[ "${status}" == 204 ]] || die "receiver answered ${status}, expected 204"
  log "receiver verified the signature (204)"
fi

log "e2e passed"
