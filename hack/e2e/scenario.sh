#!/usr/bin/env bash
# The end-to-end scenario, against whatever cluster kubectl points at (the local node of
# `make e2e`, or kind through hack/kind-e2e.sh). The image must already be on the node.
#
#   KUBECONFIG=... IMAGE=localhost/blooio-operator:dev hack/e2e/scenario.sh
#
# 1. the Blooio simulator runs in the cluster (same image, `blooio-operator simulate`);
# 2. `helm install` of deploy/chart with only the image and the Blooio URL set (INSTALL=
#    chart, the default with $HELM), or `kubectl apply -k` of an overlay of deploy/ that
#    only swaps those two (INSTALL=kustomize); the operator Deployment becomes Available
#    with its 2 replicas (probes passing, uid 65532, read-only root filesystem), one
#    leading (the Lease's holder), one standby;
# 3. `kubectl apply -k` of an overlay of examples/ that only swaps the receiver's image;
#    the BlooioWebhook becomes Ready, the receiver pods mount its Secret;
# 4. the simulator delivers a signed event to each receiver pod, which answers 204;
# 5. more BlooioWebhooks while Blooio is slow, and the leader pod is deleted mid-way:
#    the standby takes the Lease over and finishes them, with exactly one remote webhook
#    each; a resource created right after the delete is Ready within 20 s; then twenty
#    more, one every half second, while `kubectl rollout restart` replaces both replicas:
#    no duplicate, none waits longer than the lease duration plus 15 s to be Ready;
# 6. rotation with blooio.com/rotate-secret: time until the Secret changes, and until
#    every receiver pod accepts deliveries signed with the new secret (kubelet refresh);
# 6c. shard hand-off (tests/node/e2e_shards.py): two shard Deployments, a resource
#    relabelled from one to the other keeps its webhook, Secret and finalizer;
# 7a. (chart) `helm upgrade` with resources present: a rolling update, no Blooio call
#    but lists, the resource Ready with its webhook; `helm uninstall` with resources
#    present: it returns at once (no finalizer to wait for), the CRD and the
#    BlooioWebhooks stay (untouched, not Terminating, webhook kept at Blooio), every
#    object of the operator is gone; `helm install` again picks them up, nothing created;
# 7. `kubectl delete -k` of the examples: the operator's finalizer deletes the remote
#    webhooks; then the operator (helm uninstall, then the kept CRD) and the simulator
#    are removed.
#
# Environment:
#   IMAGE        operator image on the node          (default localhost/blooio-operator:dev)
#   ADDRESSING   service | podip: how pods reach the simulator. `podip` for clusters
#                without cluster DNS / kube-proxy (the local node)  (default service)
#   RESULTS      file that receives name=value figures (seconds)    (default: none)
#   WORK         scratch dir for the generated overlays  (default .build/e2e/scenario)
#   TIMEOUT      kubectl wait timeout                    (default 180s)
#   KEEP         1: do not delete anything at the end    (default 0)
#   INSTALL      chart | kustomize                       (default chart if $HELM is set)
#   HELM         the helm binary (make e2e: devenv/gotools.py's build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${IMAGE:-localhost/blooio-operator:dev}"
ADDRESSING="${ADDRESSING:-service}"
RESULTS="${RESULTS:-}"
WORK="${WORK:-${ROOT}/.build/e2e/scenario}"
TIMEOUT="${TIMEOUT:-180s}"
KEEP="${KEEP:-0}"
HELM="${HELM:-}"
INSTALL="${INSTALL:-$([[ -n "${HELM}" ]] && echo chart || echo kustomize)}"
RELEASE=blooio-operator
CHART="${ROOT}/deploy/chart/blooio-operator"
NS=blooio-system
SIM_KEY=bl_live_e2e_scenario_key
T0="$(date +%s.%N)"

log() { printf '\n==> [%6.1fs] %s\n' "$(elapsed "${T0}")" "$*" >&2; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
figure() { # name start: record seconds since start
  local value; value="$(elapsed "$2")"
  printf '    %s = %ss\n' "$1" "${value}" >&2
  if [[ -n "${RESULTS}" ]]; then echo "$1=${value}" >>"${RESULTS}"; fi
}
k() { kubectl "$@"; }
failures_later=()
fail_later() { printf 'FAILED (continuing): %s\n' "$*" >&2; failures_later+=("$*"); }
# The simulator's admin API, called from inside its pod (works on any cluster).
sim() { # METHOD PATH [JSON]
  k -n "${NS}" exec deploy/blooio-simulator -- python -c '
import sys, httpx
method, path = sys.argv[1], sys.argv[2]
body = sys.argv[3] if len(sys.argv) > 3 else None
r = httpx.request(method, "http://127.0.0.1:8080" + path, content=body,
                  headers={"Content-Type": "application/json"}, timeout=30)
r.raise_for_status()
print(r.text)
' "$@"
}
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
# Deliver a signed message.received for webhook $1 to pod IP $2; prints the HTTP status.
deliver() {
  sim POST "/_sim/webhooks/$1/deliver" \
    "{\"event_type\": \"message.received\", \"target_url\": \"http://$2:8080/\"}" |
    json 'd["data"]["response_status"]'
}
sim_webhook_count() { sim GET /_sim/webhooks | json 'len(d["data"])'; }
secret_digest() { # fingerprint of the signing secret (never the secret itself)
  k -n shop get secret orders-blooio-webhook -o jsonpath='{.data.signing-secret}' | sha256sum | cut -c1-12
}
# The operator pod holding the Lease (holderIdentity is "<pod name>_<process suffix>").
leader_pod() {
  local holder
  holder="$(k -n "${NS}" get lease blooio-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
  [[ -n "${holder}" ]] && echo "${holder%_*}"
}
# An operator pod's role as its readiness endpoint reports it (leader | standby).
pod_role() {
  k -n "${NS}" exec "$1" -c operator -- python -c '
import json, urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=5))["role"])'
}
receiver_ips() {
  k -n shop get pods -l app.kubernetes.io/name=orders-receiver \
    --field-selector=status.phase=Running -o jsonpath='{.items[*].status.podIP}'
}

on_exit() {
  local rc=$?
  if [[ ${rc} -ne 0 ]]; then
    log "scenario failed (exit ${rc}); state of the cluster:"
    k get pods -A -o wide || true
    k -n shop get bwh -o wide || true
    k -n "${NS}" describe deploy/blooio-operator | tail -30 || true
    k -n "${NS}" logs deploy/blooio-operator --tail=60 || true
    k get events -A --sort-by=.lastTimestamp | tail -30 || true
  fi
  exit "${rc}"
}
trap on_exit EXIT

mkdir -p "${WORK}/operator" "${WORK}/examples"
if [[ -n "${RESULTS}" ]]; then : >"${RESULTS}"; fi

# ---------------------------------------------------------------- 1. simulator
log "simulator in the cluster (${IMAGE} simulate)"
k create namespace "${NS}" --dry-run=client -o yaml | k apply -f -
k apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: blooio-simulator
  namespace: ${NS}
  labels: {app.kubernetes.io/name: blooio-simulator}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: blooio-simulator}
  template:
    metadata:
      labels: {app.kubernetes.io/name: blooio-simulator}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
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
            httpGet: {path: /_sim/health, port: http}
            periodSeconds: 2
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
# The shipped NetworkPolicy allows egress to 53/443/6443 only; allow the simulator too.
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
figure simulator_ready_s "${T0}"
if [[ "${ADDRESSING}" == podip ]]; then
  sim_ip="$(k -n "${NS}" get pods -l app.kubernetes.io/name=blooio-simulator \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].status.podIP}')"
  api_url="http://${sim_ip}:8080/v4"
else
  api_url="http://blooio-simulator.${NS}.svc:8080/v4"
fi
[[ "$(sim GET /_sim/health | json 'd["ok"]')" == True ]] || die "simulator not healthy"
log "Blooio URL for the operator: ${api_url}"

# ---------------------------------------------------------------- 2. operator
k -n "${NS}" create secret generic blooio-credentials \
  --from-literal=api-key="${SIM_KEY}" --dry-run=client -o yaml | k apply -f - >/dev/null
deploy_rel="$(realpath --relative-to="${WORK}/operator" "${ROOT}/deploy")"
examples_rel="$(realpath --relative-to="${WORK}/examples" "${ROOT}/examples")"
sed -e "s|@DEPLOY@|${deploy_rel}|" -e "s|@IMAGE_NAME@|${IMAGE%:*}|" -e "s|@IMAGE_TAG@|${IMAGE##*:}|" \
  -e "s|@BLOOIO_API_URL@|${api_url}|" "${ROOT}/hack/e2e/overlay/operator/kustomization.yaml" \
  >"${WORK}/operator/kustomization.yaml"
sed -e "s|@EXAMPLES@|${examples_rel}|" -e "s|@IMAGE_NAME@|${IMAGE%:*}|" -e "s|@IMAGE_TAG@|${IMAGE##*:}|" \
  "${ROOT}/hack/e2e/overlay/examples/kustomization.yaml" >"${WORK}/examples/kustomization.yaml"

# Helm installs into a namespace it does not own: the Pod Security labels that
# deploy/manifests/namespace.yaml carries are the namespace owner's (docs/operations.md).
k label namespace "${NS}" --overwrite pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
helm_values=(--set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}"
  --set "config.apiUrl=${api_url}")
t_apply="$(date +%s.%N)"
if [[ "${INSTALL}" == chart ]]; then
  [[ -x "${HELM}" ]] || die "INSTALL=chart needs HELM (the helm binary)"
  log "helm install (deploy/chart with image ${IMAGE} and the simulator's URL)"
  "${HELM}" install "${RELEASE}" "${CHART}" -n "${NS}" "${helm_values[@]}"
else
  log "kubectl apply -k (deploy/ with image ${IMAGE} and the simulator's URL)"
  k apply -k "${WORK}/operator"
fi
k wait --for=condition=Established crd/blooiowebhooks.blooio.com --timeout="${TIMEOUT}"
k -n "${NS}" wait deploy/blooio-operator --for=condition=Available --timeout="${TIMEOUT}"
k -n "${NS}" rollout status deploy/blooio-operator --timeout="${TIMEOUT}"
figure operator_available_s "${t_apply}"
deadline=$((SECONDS + 60))
until leader="$(leader_pod)"; do
  ((SECONDS < deadline)) || die "no operator pod holds the Lease after 60 s"
  sleep 0.5
done
read -r -a op_pods <<<"$(k -n "${NS}" get pods -l app.kubernetes.io/component=operator \
  -o jsonpath='{.items[*].metadata.name}')"
[[ ${#op_pods[@]} -eq 2 ]] || die "expected 2 operator pods, found: ${op_pods[*]}"
roles=""
for pod in "${op_pods[@]}"; do
  role="$(pod_role "${pod}")"
  roles+="${pod}=${role} "
  if [[ "${pod}" == "${leader}" ]]; then
    [[ "${role}" == leader ]] || die "the Lease names ${leader}, which reports ${role}"
  else
    [[ "${role}" == standby ]] || die "${pod} reports ${role}; the Lease names ${leader}"
  fi
done
log "2 operator replicas, both ready: ${roles}(Lease holder ${leader})"
op_pod="${op_pods[0]}"
ids="$(k -n "${NS}" exec "${op_pod}" -c operator -- python -c '
import errno, os
try:
    open("/opt/e2e-probe", "w")
    ro = "writable"
except OSError as e:
    ro = "read-only" if e.errno == errno.EROFS else f"error {e.errno}"
print(os.getuid(), os.getgid(), ro)
')"
[[ "${ids}" == "65532 65532 read-only" ]] || die "operator runs as '${ids}', expected '65532 65532 read-only'"
log "operator pod ${op_pod}: uid/gid 65532, root filesystem read-only"

# ---------------------------------------------------------------- 3. examples
log "kubectl apply -k (examples/ with the receiver on ${IMAGE})"
t_examples="$(date +%s.%N)"
k apply -k "${WORK}/examples"
k -n shop wait bwh/orders --for=condition=Ready --timeout="${TIMEOUT}"
figure webhook_ready_s "${t_examples}"
k -n shop get bwh orders -o wide
webhook_id="$(k -n shop get bwh orders -o jsonpath='{.status.webhookId}')"
[[ -n "${webhook_id}" ]] || die "status.webhookId is empty"
k -n shop rollout status deploy/orders-receiver --timeout="${TIMEOUT}"
figure receiver_ready_s "${t_examples}"
mounted="$(k -n shop get deploy orders-receiver \
  -o jsonpath='{.spec.template.spec.volumes[?(@.secret)].secret.secretName}')"
[[ "${mounted}" == orders-blooio-webhook ]] || die "receiver mounts '${mounted}'"

# ---------------------------------------------------------------- 4. delivery
read -r -a pods_ips <<<"$(receiver_ips)"
[[ ${#pods_ips[@]} -ge 1 ]] || die "no running receiver pod"
for ip in "${pods_ips[@]}"; do
  status="$(deliver "${webhook_id}" "${ip}")"
  [[ "${status}" == 204 ]] || die "receiver pod ${ip} answered ${status}, expected 204"
  log "signed delivery to receiver pod ${ip}: 204"
done
figure delivery_verified_s "${t_examples}"

# ------------------------------------------------- 5. leader pod deleted mid-way
log "three more BlooioWebhooks while Blooio answers creates slowly; the leader pod deleted mid-way"
sim POST /_sim/faults '{"rules": [{"kind": "latency", "endpoint": "POST /webhooks", "ms": 3000, "count": 3}]}' >/dev/null
posts() { sim GET /_sim/calls | json 'len([c for c in d["calls"] if c["endpoint"] == "POST /webhooks"])'; }
before_posts="$(posts)"
for name in e2e-a e2e-b e2e-c; do
  cat <<EOF
apiVersion: blooio.com/v1alpha1
kind: BlooioWebhook
metadata: {name: ${name}, namespace: shop}
spec:
  url: https://${name}.shop.example.com/blooio
  eventTypes: [message.received]
---
EOF
done | k apply -f -
deadline=$((SECONDS + 60))
until (($(posts) > before_posts)); do
  ((SECONDS < deadline)) || die "the operator sent no create within 60 s"
  sleep 0.2
done
posts_at_delete="$(posts)"
op_pod="$(leader_pod)" || die "no operator pod holds the Lease"
k -n "${NS}" delete pod "${op_pod}" --wait=false
t_restart="$(date +%s.%N)"
log "leader pod ${op_pod} deleted after $((posts_at_delete - before_posts)) of the 3 creates reached Blooio"
# One more resource right away: the standby must handle it within 20 s of the delete.
k apply -f - <<END
apiVersion: blooio.com/v1alpha1
kind: BlooioWebhook
metadata: {name: e2e-d, namespace: shop}
spec:
  url: https://e2e-d.shop.example.com/blooio
  eventTypes: [message.received]
END
deadline=$((SECONDS + 60))
until new_leader="$(leader_pod)" && [[ "${new_leader}" != "${op_pod}" ]]; do
  ((SECONDS < deadline)) || die "no other pod took the Lease over within 60 s"
  sleep 0.2
done
figure leader_failover_s "${t_restart}"
log "the Lease passed from ${op_pod} to ${new_leader}"
k -n shop wait bwh/e2e-d --for=condition=Ready --timeout="${TIMEOUT}"
figure new_resource_ready_after_leader_delete_s "${t_restart}"
ready_after="$(elapsed "${t_restart}")"
awk -v t="${ready_after}" 'BEGIN { exit !(t <= 20) }' ||
  fail_later "a resource created when the leader pod was deleted took ${ready_after} s to be Ready (> 20 s)"
deadline=$((SECONDS + 180))
until new_pod="$(k -n "${NS}" get pods -l app.kubernetes.io/component=operator \
  -o jsonpath='{range .items[?(@.status.containerStatuses[0].ready==true)]}{.metadata.name}{"\n"}{end}' |
  grep -vx "${op_pod}" | head -1)" && [[ -n "${new_pod}" ]]; do
  ((SECONDS < deadline)) || die "no new operator pod became ready"
  sleep 0.5
done
figure operator_replaced_s "${t_restart}"
for name in e2e-a e2e-b e2e-c; do
  k -n shop wait "bwh/${name}" --for=condition=Ready --timeout="${TIMEOUT}"
done
figure resumed_ready_s "${t_restart}"
k -n "${NS}" rollout status deploy/blooio-operator --timeout="${TIMEOUT}"
check="$(sim GET /_sim/webhooks | python3 -c '
import collections, json, sys
hooks = json.load(sys.stdin)["data"]
urls = collections.Counter(h["url"] for h in hooks)
dups = {u: n for u, n in urls.items() if n > 1}
print(len(hooks), "duplicates:" + (",".join(sorted(dups)) or "none"))
')"
posts_total="$(posts)"
log "simulator webhooks after the failover: ${check}; POST /webhooks calls for the four: $((posts_total - before_posts))"
if [[ "${check}" != "5 duplicates:none" ]]; then
  # What each side recorded (ids, URLs, intents; never the signing secrets).
  sim GET /_sim/webhooks | python3 -c '
import json, sys
for h in json.load(sys.stdin)["data"]:
    print("  remote", h["id"], h["url"], "created_at", h.get("created_at"))
' >&2
  k -n shop get bwh -o custom-columns='NAME:.metadata.name,WEBHOOK:.status.webhookId,PENDING:.status.pending.operation,ABANDONED:.status.abandoned[*].url' >&2
  # Not fatal yet: the rest of the scenario still runs and reports its figures.
  fail_later "after the leader pod was deleted: expected 5 remote webhooks and no duplicates, got: ${check}"
fi
for name in e2e-a e2e-b e2e-c e2e-d; do
  id="$(k -n shop get bwh "${name}" -o jsonpath='{.status.webhookId}')"
  sim GET "/_sim/webhooks/${id}" >/dev/null || die "${name}: status.webhookId ${id} unknown to Blooio"
  in_secret="$(k -n shop get secret "${name}-blooio-webhook" -o jsonpath='{.data.webhook-id}' | base64 -d)"
  [[ "${in_secret}" == "${id}" ]] || fail_later "${name}: Secret names webhook ${in_secret}, status ${id}"
done
k -n shop delete bwh e2e-a e2e-b e2e-c e2e-d --timeout="${TIMEOUT}"
[[ "$(sim_webhook_count)" == 1 ]] || die "the extra remote webhooks were not deleted"

# ------------------------------------- 5b. rollout restart during a burst of creates
log "twenty BlooioWebhooks, one every half second, during a rollout restart of the operator"
burst=()
for i in $(seq 0 19); do burst+=("e2e-r${i}"); done
t_burst="$(date +%s.%N)"
k -n "${NS}" rollout restart deploy/blooio-operator
for name in "${burst[@]}"; do
  k apply -f - >/dev/null <<END
apiVersion: blooio.com/v1alpha1
kind: BlooioWebhook
metadata: {name: ${name}, namespace: shop, labels: {e2e: rollout}}
spec:
  url: https://${name}.shop.example.com/blooio
  eventTypes: [message.received]
END
  sleep 0.5
done
figure rollout_burst_created_s "${t_burst}"
for name in "${burst[@]}"; do
  k -n shop wait "bwh/${name}" --for=condition=Ready --timeout="${TIMEOUT}" >/dev/null
done
figure rollout_burst_ready_s "${t_burst}"
k -n "${NS}" rollout status deploy/blooio-operator --timeout="${TIMEOUT}"
figure rollout_done_s "${t_burst}"
# The longest any of them waited: its Ready transition minus its creation (1 s resolution).
longest="$(k -n shop get bwh -l e2e=rollout -o json | python3 -c '
import json, sys
from datetime import datetime
t = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
waits = []
for o in json.load(sys.stdin)["items"]:
    ready = next(c for c in o["status"]["conditions"] if c["type"] == "Ready")
    waits.append(t(ready["lastTransitionTime"]) - t(o["metadata"]["creationTimestamp"]))
print(f"{max(waits):.0f}")
')"
printf '    %s = %ss\n' rollout_longest_wait_s "${longest}" >&2
if [[ -n "${RESULTS}" ]]; then echo "rollout_longest_wait_s=${longest}" >>"${RESULTS}"; fi
((longest <= 30)) ||
  fail_later "a resource created during the rollout waited ${longest} s to be Ready (> 15 s lease + 15 s)"
check="$(sim GET /_sim/webhooks | python3 -c '
import collections, json, sys
hooks = json.load(sys.stdin)["data"]
urls = collections.Counter(h["url"] for h in hooks)
dups = {u: n for u, n in urls.items() if n > 1}
print(len(hooks), "duplicates:" + (",".join(sorted(dups)) or "none"))
')"
log "simulator webhooks after the rollout: ${check}; Lease holder $(leader_pod)"
[[ "${check}" == "21 duplicates:none" ]] ||
  fail_later "after a rollout restart during creates: expected 21 remote webhooks and no duplicates, got: ${check}"
k -n shop delete bwh -l e2e=rollout --timeout="${TIMEOUT}" >/dev/null
[[ "$(sim_webhook_count)" == 1 ]] || die "the burst's remote webhooks were not deleted"

# ---------------------------------------------------------------- 6. rotation
old_digest="$(secret_digest)"
read -r -a pods_ips <<<"$(receiver_ips)"
log "rotation (blooio.com/rotate-secret); ${#pods_ips[@]} receiver pods"
t_rotate="$(date +%s.%N)"
k -n shop annotate bwh orders blooio.com/rotate-secret="e2e-$(date -u +%Y%m%dT%H%M%SZ)" --overwrite
deadline=$((SECONDS + 120))
until [[ "$(secret_digest)" != "${old_digest}" ]]; do
  ((SECONDS < deadline)) || die "the Secret did not change within 120 s"
  sleep 0.2
done
figure rotation_secret_updated_s "${t_rotate}"
t_secret="$(date +%s.%N)"
for ip in "${pods_ips[@]}"; do
  deadline=$((SECONDS + 180))
  attempts=0
  until status="$(deliver "${webhook_id}" "${ip}")" && [[ "${status}" == 204 ]]; do
    [[ "${status}" == 401 ]] || die "receiver pod ${ip} answered ${status} during rotation"
    ((SECONDS < deadline)) || die "receiver pod ${ip} still refuses the new signature after 180 s"
    attempts=$((attempts + 1))
    sleep 0.5
  done
  log "receiver pod ${ip} accepts the new signature (after ${attempts} refused deliveries)"
done
figure rotation_picked_up_s "${t_rotate}"
figure rotation_kubelet_refresh_s "${t_secret}"

# ------------------------------------------------------------------ probes
read -r -a op_pods <<<"$(k -n "${NS}" get pods -l app.kubernetes.io/component=operator \
  -o jsonpath='{.items[*].metadata.name}')"
[[ ${#op_pods[@]} -eq 2 ]] || die "expected 2 operator pods, found: ${op_pods[*]}"
for op_pod in "${op_pods[@]}"; do
  probes="$(k -n "${NS}" get pod "${op_pod}" -o jsonpath='{.status.containerStatuses[0].started} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}')"
  [[ "${probes}" == "true true 0" ]] || die "operator pod ${op_pod} started/ready/restarts: ${probes}"
  # The startup probe fails until the process listens (expected); liveness and readiness
  # probes only run after it passed, so any failure of theirs is a real one.
  failures="$(k -n "${NS}" get events --field-selector "involvedObject.name=${op_pod},reason=Unhealthy" \
    -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | grep -E '^(Liveness|Readiness) probe' || true)"
  [[ -z "${failures}" ]] || die "probe failures for ${op_pod}: ${failures}"
  log "operator pod ${op_pod} ($(pod_role "${op_pod}")): startup, liveness and readiness probes passed, no restarts"
done

# ------------------------------------ 6c. shard hand-off by relabelling (issue 20, item 4)
log "two shard Deployments (--selector blooio.com/shard=a|b); a Ready resource relabelled a -> b"
(cd "${ROOT}" && python3 -m tests.node.e2e_shards) || die "shard hand-off (tests/node/e2e_shards.py)"

# ------------------------------- 7a. helm upgrade and helm uninstall with resources present
operator_objects() { # every object of the release that helm would own, by kind/name
  k get deploy,sa,svc,networkpolicy,pdb,role,rolebinding -n "${NS}" \
    -l app.kubernetes.io/instance="${RELEASE}" -o name 2>/dev/null
  k get clusterrole,clusterrolebinding -l app.kubernetes.io/instance="${RELEASE}" -o name 2>/dev/null
}
non_list_calls() { sim GET /_sim/calls | json 'len([c for c in d["calls"] if not c["endpoint"].startswith("GET ")])'; }
if [[ "${INSTALL}" == chart && "${KEEP}" != 1 ]]; then
  webhook_before="$(k -n shop get bwh orders -o jsonpath='{.status.webhookId}')"
  calls_before="$(non_list_calls)"
  log "helm upgrade with resources present (a new pod annotation and log level: a rolling update)"
  t_upgrade="$(date +%s.%N)"
  "${HELM}" upgrade "${RELEASE}" "${CHART}" -n "${NS}" "${helm_values[@]}" \
    --set-string podAnnotations.e2e/upgrade=1 --set config.logLevel=DEBUG
  k -n "${NS}" rollout status deploy/blooio-operator --timeout="${TIMEOUT}"
  figure helm_upgrade_rolled_out_s "${t_upgrade}"
  k -n shop wait bwh/orders --for=condition=Ready --timeout="${TIMEOUT}"
  [[ "$(k -n shop get bwh orders -o jsonpath='{.status.webhookId}')" == "${webhook_before}" ]] ||
    die "helm upgrade changed the webhook of orders"
  [[ "$(k -n "${NS}" get deploy blooio-operator -o jsonpath='{.spec.template.metadata.annotations.e2e/upgrade}')" == 1 ]] ||
    die "helm upgrade did not reach the Deployment"
  [[ "$(non_list_calls)" == "${calls_before}" ]] ||
    die "helm upgrade made Blooio calls other than lists: $(( $(non_list_calls) - calls_before ))"
  log "helm upgrade: rolled out, orders Ready with webhook ${webhook_before}, no Blooio call but lists"

  log "helm uninstall with resources present"
  t_uninstall="$(date +%s.%N)"
  timeout 120 "${HELM}" uninstall "${RELEASE}" -n "${NS}" --wait --timeout 90s ||
    die "helm uninstall did not finish within 120 s"
  figure helm_uninstall_s "${t_uninstall}"
  left="$(operator_objects)"
  [[ -z "${left}" ]] || die "helm uninstall left operator objects: ${left}"
  k get crd blooiowebhooks.blooio.com >/dev/null || die "helm uninstall deleted the CRD"
  deleting="$(k -n shop get bwh orders -o jsonpath='{.metadata.deletionTimestamp}')" ||
    die "helm uninstall deleted the BlooioWebhook"
  [[ -z "${deleting}" ]] || die "orders is Terminating after helm uninstall"
  [[ "$(sim_webhook_count)" == 1 ]] || die "helm uninstall touched the webhook at Blooio"
  [[ "$(non_list_calls)" == "${calls_before}" ]] || die "Blooio calls during helm uninstall"
  log "helm uninstall: operator objects gone, CRD and orders kept (webhook ${webhook_before} kept at Blooio)"

  log "helm install again: the kept CRD and resources are picked up, nothing created"
  t_reinstall="$(date +%s.%N)"
  "${HELM}" install "${RELEASE}" "${CHART}" -n "${NS}" "${helm_values[@]}"
  k -n "${NS}" rollout status deploy/blooio-operator --timeout="${TIMEOUT}"
  figure helm_reinstall_available_s "${t_reinstall}"
  k -n shop wait bwh/orders --for=condition=Ready --timeout="${TIMEOUT}"
  [[ "$(k -n shop get bwh orders -o jsonpath='{.status.webhookId}')" == "${webhook_before}" ]] ||
    die "the reinstalled operator changed the webhook of orders"
  [[ "$(sim_webhook_count)" == 1 ]] || die "the reinstalled operator created a webhook"
fi

# ---------------------------------------------------------------- 7. cleanup
if [[ "${KEEP}" == 1 ]]; then
  log "KEEP=1: leaving everything installed"
  exit $((${#failures_later[@]} > 0))
fi
log "kubectl delete -k (examples): the operator's finalizer deletes the remote webhook"
t_delete="$(date +%s.%N)"
k delete -k "${WORK}/examples" --timeout="${TIMEOUT}"
figure examples_deleted_s "${t_delete}"
[[ "$(sim_webhook_count)" == 0 ]] || die "remote webhooks left after kubectl delete -k"
if [[ "${INSTALL}" == chart ]]; then
  log "helm uninstall, then the CRD it keeps, and the simulator"
  "${HELM}" uninstall "${RELEASE}" -n "${NS}" --wait --timeout 90s
  k delete crd blooiowebhooks.blooio.com --timeout="${TIMEOUT}"
  k delete namespace "${NS}" --timeout="${TIMEOUT}"
else
  log "kubectl delete -k (operator) and the simulator"
  k delete -k "${WORK}/operator" --timeout="${TIMEOUT}" --ignore-not-found
fi
figure scenario_total_s "${T0}"
if [[ ${#failures_later[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${failures_later[@]}" >&2
  exit 1
fi
log "e2e scenario passed"
