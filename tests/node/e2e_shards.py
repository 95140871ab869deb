"""``make e2e``, shard hand-off (issue 20, item 4): hack/e2e/scenario.sh runs this module
against the cluster its kubectl points at, once the operator is installed and Ready.

    KUBECONFIG=... python3 -m tests.node.e2e_shards     # from the repository root

1. The installed operator Deployment is scaled to 0 (it serves every BlooioWebhook, and
   a shard must be the only one serving its resources), and two shard Deployments are
   made from it as it is installed (same image, env, RBAC, probes; one replica each):
   ``--selector blooio.com/shard=a|b``, each with its own ``--lease-name``.
2. ``shard-a1`` (label ``blooio.com/shard=a``) and ``shard-b1`` (``b``) become Ready; each
   shard's Lease has a holder.
3. ``shard-a1`` is relabelled to ``b``, then its eventTypes are edited. Shard b applies
   the edit to the same webhook (a PATCH at the simulator); nothing is created or
   deleted at Blooio; ``status.webhookId`` and the Secret's bytes are unchanged; the
   finalizer stays. Deleting it then goes through shard b (shard a no longer sees it):
   the resource goes and its webhook is deleted at Blooio.
4. The shard Deployments and their Leases are removed and the operator is scaled back.

Figures (seconds) are appended to ``$RESULTS``. Only the standard library and kubectl,
as the rest of the scenario: it runs with the node's ``python3``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

NS = os.environ.get("OPERATOR_NAMESPACE", "blooio-system")
DEPLOYMENT = os.environ.get("OPERATOR_DEPLOYMENT", "blooio-operator")
APP_NS = "shop"
SHARDS = ("a", "b")
LABEL = "blooio.com/shard"
FINALIZER = "blooio.com/finalizer"
RESULTS = os.environ.get("RESULTS", "")
TIMEOUT = os.environ.get("TIMEOUT", "180s")
T = TypeVar("T")


class Failed(Exception):
    pass


def log(message: str) -> None:
    print(f"    [shards] {message}", file=sys.stderr, flush=True)


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=240
    )
    if done.returncode != 0:
        raise Failed(f"kubectl {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def get_json(*args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(kubectl(*args, "-o", "json"))
    return data


SIM_CLIENT = """
import sys, httpx
method, path = sys.argv[1], sys.argv[2]
body = sys.argv[3] if len(sys.argv) > 3 else None
r = httpx.request(method, "http://127.0.0.1:8080" + path, content=body,
                  headers={"Content-Type": "application/json"}, timeout=30)
r.raise_for_status()
print(r.text)
"""


def sim(method: str, path: str) -> Any:
    """The simulator's admin API from inside its pod, as scenario.sh's ``sim``."""
    out = kubectl(
        "-n", NS, "exec", "deploy/blooio-simulator", "--", "python", "-c", SIM_CLIENT, method, path
    )
    return json.loads(out)


def wait(probe: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Failed as exc:  # a pod starting, an exec refused: not yet
            last = exc
        time.sleep(0.5)  # pacing between looks at the cluster
    raise Failed(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last})" if last else ""))


def figure(name: str, since: float) -> None:
    value = time.monotonic() - since
    print(f"    {name} = {value:.1f}s", file=sys.stderr, flush=True)
    if RESULTS:
        with open(RESULTS, "a") as fh:
            fh.write(f"{name}={value:.1f}\n")


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def shard_name(shard: str) -> str:
    return f"{DEPLOYMENT}-shard-{shard}"


def lease_name(shard: str) -> str:
    return f"blooio-operator-shard-{shard}"


def shard_deployment(installed: dict[str, Any], shard: str) -> dict[str, Any]:
    """The installed Deployment as shard ``shard``: its own name, pod labels, selector,
    Lease; one replica. Pods keep app.kubernetes.io/name (the NetworkPolicies)."""
    component = {"app.kubernetes.io/component": f"operator-shard-{shard}"}
    spec = json.loads(json.dumps(installed["spec"]))
    spec["replicas"] = 1
    spec["selector"] = {"matchLabels": {**spec["selector"]["matchLabels"], **component}}
    template = spec["template"]
    template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **component}
    container = next(c for c in template["spec"]["containers"] if c["name"] == "operator")
    container["args"] = [
        *container.get("args", []),
        f"--selector={LABEL}={shard}",
        f"--lease-name={lease_name(shard)}",
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": shard_name(shard),
            "namespace": NS,
            "labels": {**installed["metadata"].get("labels", {}), **component},
        },
        "spec": spec,
    }


def webhook_manifest(name: str, shard: str) -> str:
    return json.dumps(
        {
            "apiVersion": "blooio.com/v1alpha1",
            "kind": "BlooioWebhook",
            "metadata": {"name": name, "namespace": APP_NS, "labels": {LABEL: shard}},
            "spec": {
                "url": f"https://{name}.shards.example.com/blooio",
                "eventTypes": ["message.received"],
            },
        }
    )


def lease_holder(shard: str) -> str:
    out = kubectl(
        "-n", NS, "get", "lease", lease_name(shard), "-o", "jsonpath={.spec.holderIdentity}"
    )
    return out.strip()


def secret_digest(name: str) -> str:
    data = get_json("-n", APP_NS, "get", "secret", name).get("data") or {}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def calls_since(mark: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = sim("GET", "/_sim/calls")["calls"]
    return calls[mark:]


def scenario(installed: dict[str, Any]) -> None:
    t0 = time.monotonic()
    for shard in SHARDS:
        kubectl("apply", "-f", "-", stdin=json.dumps(shard_deployment(installed, shard)))
    for shard in SHARDS:
        kubectl(
            "-n", NS, "rollout", "status", f"deploy/{shard_name(shard)}", f"--timeout={TIMEOUT}"
        )
        holder = wait(functools.partial(lease_holder, shard), f"a holder of {lease_name(shard)}")
        log(f"shard {shard}: Deployment {shard_name(shard)} available, Lease held by {holder}")
    figure("shards_available_s", t0)

    t_create = time.monotonic()
    for name, shard in (("shard-a1", "a"), ("shard-b1", "b")):
        kubectl("apply", "-f", "-", stdin=webhook_manifest(name, shard))
    for name in ("shard-a1", "shard-b1"):
        kubectl(
            "-n", APP_NS, "wait", f"bwh/{name}", "--for=condition=Ready", f"--timeout={TIMEOUT}"
        )
    figure("shards_resources_ready_s", t_create)

    before = get_json("-n", APP_NS, "get", "bwh", "shard-a1")
    webhook_id = before["status"]["webhookId"]
    secret = before["status"]["secretName"]
    digest = secret_digest(secret)
    mark = len(sim("GET", "/_sim/calls")["calls"])
    t_relabel = time.monotonic()
    kubectl("-n", APP_NS, "label", "bwh", "shard-a1", f"{LABEL}=b", "--overwrite")
    kubectl(
        "-n",
        APP_NS,
        "patch",
        "bwh",
        "shard-a1",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"eventTypes": ["message.received", "message.sent"]}}),
    )

    def edited() -> bool:
        hook = sim("GET", f"/_sim/webhooks/{webhook_id}")["data"]
        return set(hook["event_types"]) == {"message.received", "message.sent"}

    wait(edited, "shard-a1's edit applied at Blooio after the relabel")
    figure("shard_handoff_edit_applied_s", t_relabel)
    after = get_json("-n", APP_NS, "get", "bwh", "shard-a1")
    problems = []
    if after["status"].get("webhookId") != webhook_id:
        problems.append(f"webhookId {webhook_id} -> {after['status'].get('webhookId')}")
    if FINALIZER not in after["metadata"].get("finalizers", []):
        problems.append(f"finalizer gone: {after['metadata'].get('finalizers')}")
    if secret_digest(secret) != digest:
        problems.append(f"Secret {secret} changed")
    calls = calls_since(mark)
    writes = [f"{c['method']} {c['path']}" for c in calls if c["method"] != "GET"]
    if writes != [f"PATCH /v4/webhooks/{webhook_id}"]:
        problems.append(f"Blooio writes since the relabel: {writes} (expected one PATCH)")
    if problems:
        raise Failed("hand-off by relabelling: " + "; ".join(problems))
    log(
        f"relabelled a -> b: same webhook {webhook_id}, Secret bytes unchanged, finalizer "
        f"kept; Blooio writes since: {writes}"
    )

    # The finalizer is shard b's now: shard a no longer sees the resource at all.
    t_delete = time.monotonic()
    kubectl("-n", APP_NS, "delete", "bwh", "shard-a1", f"--timeout={TIMEOUT}")
    figure("shard_handoff_deleted_s", t_delete)
    deleted = [c for c in calls_since(mark) if c["method"] == "DELETE"]
    if [c["path"] for c in deleted] != [f"/v4/webhooks/{webhook_id}"]:
        raise Failed(f"deleting shard-a1: DELETE calls {[c['path'] for c in deleted]}")
    b_logs = kubectl("-n", NS, "logs", f"deploy/{shard_name('b')}", "-c", "operator")
    if "shard-a1" not in b_logs:
        raise Failed("shard b's log never mentions shard-a1")
    log(f"shard-a1 deleted through shard b: one DELETE of {webhook_id} at Blooio")
    kubectl("-n", APP_NS, "delete", "bwh", "shard-b1", f"--timeout={TIMEOUT}")


def main() -> int:
    installed = get_json("-n", NS, "get", "deploy", DEPLOYMENT)
    replicas = str(installed["spec"].get("replicas", 1))
    pods = selector(installed["spec"]["selector"]["matchLabels"])
    t0 = time.monotonic()
    try:
        kubectl("-n", NS, "scale", f"deploy/{DEPLOYMENT}", "--replicas=0")
        wait(
            lambda: not kubectl("-n", NS, "get", "pods", "-l", pods, "-o", "name").strip(),
            f"{DEPLOYMENT}'s pods gone",
        )
        scenario(installed)
    except Failed as exc:
        print(f"FAILED: shard hand-off: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for shard in SHARDS:
            subprocess.run(
                [
                    "kubectl",
                    "-n",
                    NS,
                    "delete",
                    "deploy",
                    shard_name(shard),
                    "--ignore-not-found",
                    "--wait=true",
                    f"--timeout={TIMEOUT}",
                ],
                check=False,
                timeout=240,
            )
            subprocess.run(
                ["kubectl", "-n", NS, "delete", "lease", lease_name(shard), "--ignore-not-found"],
                check=False,
                timeout=60,
            )
        kubectl("-n", NS, "scale", f"deploy/{DEPLOYMENT}", f"--replicas={replicas}")
        kubectl("-n", NS, "rollout", "status", f"deploy/{DEPLOYMENT}", f"--timeout={TIMEOUT}")
        figure("shards_total_s", t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
