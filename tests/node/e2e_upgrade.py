"""``make e2e-upgrade``: 0.1.0 -> this tree -> 0.1.0 with 50 resources, on the local node.

    python -m tests.node.e2e_upgrade [--work-dir .build/e2e-upgrade] [--count 50]

1. The previous release is the git tag ``v0.1.0``: its tree is exported with ``git
   archive`` (the checkout is never switched) and its image built from it with its own
   hack/image/build.sh (``localhost/blooio-operator:0.1.0``); this tree's image is the
   archive of ``make image`` (``localhost/blooio-operator:dev``).
2. A local node (as ``make e2e``), the Blooio simulator in it (two API keys), and 0.1.0
   installed with its manifests (``kubectl apply -k`` of its deploy/, only the image and
   the Blooio URL changed, as its own e2e did).
3. 50 BlooioWebhooks in two namespaces with a mix of features: default and listed event
   types, the operator's key and a resource's own key (``spec.credentialsRef`` to a
   labelled Secret), ``deletionPolicy`` Delete/Orphan/Disable, ``suspend``, a Secret
   with its own name, labels and annotations. All Ready.
4. Upgrade: this tree's CRD, then its manifests (``kubectl apply -k``, 2 replicas with
   leader election); wait until the new operator has sealed every claim (its first act on
   a 0.1.0 resource) and the fleet stays quiet for a while.
5. Roll back: 0.1.0's CRD and manifests again; the same wait.

After each of 4 and 5: every resource Ready with the webhook it had, no Blooio call but
lists (GETs), no duplicate webhook (one per URL at the simulator, 50 in all), every
Secret's data unchanged. Figures and counts go to ``<work-dir>/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from blooio_operator.devenv.node import LocalNode, NodeError
from tests.node.e2e import Stopped, _on_signal, leftovers

ROOT = Path(__file__).resolve().parents[2]
NEW_IMAGE = "localhost/blooio-operator:dev"
OLD_IMAGE = "localhost/blooio-operator:0.1.0"
NS = "blooio-system"
APP_NAMESPACES = ("upgrade-a", "upgrade-b")
KEY = "bl_live_upgrade_default_key"
OWN_KEY = "bl_live_upgrade_own_key"
TIMEOUT = "300s"


class Failed(Exception):
    """A check of the upgrade failed."""


def run(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None, **kw: Any) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, **kw)
    if out.returncode != 0:
        raise Failed(f"{' '.join(cmd[:6])} failed ({out.returncode}): {out.stderr[-3000:]}")
    return str(out.stdout)


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def k(self, *args: str, stdin: str | None = None) -> str:
        return run("kubectl", *args, env=self.env, input=stdin)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.k("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def sim(self, method: str, path: str) -> Any:
        code = (
            "import sys, httpx; r = httpx.request(sys.argv[1], 'http://127.0.0.1:8080' + "
            "sys.argv[2], timeout=30); r.raise_for_status(); print(r.text)"
        )
        out = self.k("-n", NS, "exec", "deploy/blooio-simulator", "--", "python", "-c", code,
                     method, path)  # fmt: skip
        return json.loads(out)

    def bwhs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for ns in APP_NAMESPACES:
            items += json.loads(self.k("-n", ns, "get", "bwh", "-o", "json"))["items"]
        return items


def wait(what: str, cond: Callable[[], bool], timeout: float, interval: float = 2.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise Failed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - start


def ready(obj: dict[str, Any]) -> bool:
    conds = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


# --- the trees and their images -------------------------------------------------------


def old_tree(work: Path, ref: str) -> tuple[Path, str]:
    sha = run("git", "rev-parse", f"{ref}^{{commit}}", cwd=ROOT).strip()
    src = work / f"src-{ref}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src, sha


def build_old_image(src: Path, sha: str, archive: Path) -> None:
    env = {**os.environ, "IMAGE": OLD_IMAGE, "ARCHIVE": str(archive), "REVISION": sha}
    subprocess.run(["bash", str(src / "hack/image/build.sh")], cwd=src, env=env, check=True)


def overlay(tree: Path, work: Path, name: str, image: str, api_url: str) -> Path:
    """That tree's own e2e overlay of its deploy/: only the image and the Blooio URL."""
    out = work / f"overlay-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    text = (tree / "hack/e2e/overlay/operator/kustomization.yaml").read_text()
    for k, v in {
        "@DEPLOY@": os.path.relpath(tree / "deploy", out),
        "@IMAGE_NAME@": image.rsplit(":", 1)[0],
        "@IMAGE_TAG@": image.rsplit(":", 1)[1],
        "@BLOOIO_API_URL@": api_url,
    }.items():
        text = text.replace(k, v)
    (out / "kustomization.yaml").write_text(text)
    return out


# --- the world ----------------------------------------------------------------------------


def simulator(c: Cluster) -> str:
    labels = {"app.kubernetes.io/name": "blooio-simulator"}
    c.k("create", "namespace", NS)
    c.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "blooio-simulator", "namespace": NS, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 65532,
                                "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "containers": [
                                {
                                    "name": "simulator",
                                    "image": NEW_IMAGE,
                                    "imagePullPolicy": "IfNotPresent",
                                    "args": [
                                        "simulate",
                                        "--host",
                                        "0.0.0.0",
                                        "--port",
                                        "8080",
                                        "--api-key",
                                        KEY,
                                        "--api-key",
                                        OWN_KEY,
                                    ],
                                    "ports": [{"name": "http", "containerPort": 8080}],
                                    "readinessProbe": {
                                        "httpGet": {"path": "/_sim/health", "port": "http"},
                                        "periodSeconds": 2,
                                    },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                }
                            ],
                        },
                    },
                },
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "blooio-operator-to-simulator", "namespace": NS},
                "spec": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "blooio-operator"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [{"podSelector": {"matchLabels": labels}}],
                            "ports": [{"port": 8080, "protocol": "TCP"}],
                        }
                    ],
                },
            },
        ]
    )
    c.k("-n", NS, "rollout", "status", "deploy/blooio-simulator", f"--timeout={TIMEOUT}")
    running = "--field-selector=status.phase=Running"
    ip = c.k("-n", NS, "get", "pods", "-l", "app.kubernetes.io/name=blooio-simulator",
             running, "-o", "jsonpath={.items[0].status.podIP}")  # fmt: skip
    c.k("-n", NS, "create", "secret", "generic", "blooio-credentials",
        f"--from-literal=api-key={KEY}")  # fmt: skip
    return f"http://{ip.strip()}:8080/v4"


def resources(count: int) -> list[dict[str, Any]]:
    """A mix of what users set, cycling over the features."""
    docs: list[dict[str, Any]] = []
    for ns in APP_NAMESPACES:
        docs += [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "own-key",
                    "namespace": ns,
                    "labels": {"blooio.com/credentials": "true"},
                },
                "stringData": {"api-key": OWN_KEY},
            },
        ]
    for i in range(count):
        ns = APP_NAMESPACES[i % 2]
        name = f"up-{i:02d}"
        spec: dict[str, Any] = {"url": f"https://{name}.{ns}.example.com/blooio"}
        if i % 3 == 1:
            spec["eventTypes"] = ["message.received", "message.delivered"]
        elif i % 3 == 2:
            spec["eventTypes"] = ["message.*", "poll.*"]
        if i % 4 == 1:
            spec["credentialsRef"] = {"name": "own-key"}
        spec["deletionPolicy"] = ("Delete", "Orphan", "Disable", "Delete", "Delete")[i % 5]
        if i % 7 == 3:
            spec["suspend"] = True
        if i % 6 == 5:
            spec["secret"] = {
                "name": f"{name}-signing",
                "labels": {"team": "upgrade"},
                "annotations": {"example.com/owner": "upgrade-test"},
            }
        docs.append(
            {
                "apiVersion": "blooio.com/v1alpha1",
                "kind": "BlooioWebhook",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }
        )
    return docs


# --- the state and the checks ---------------------------------------------------------------


def snapshot(c: Cluster) -> dict[str, Any]:
    objs = c.bwhs()
    secrets: dict[str, tuple[str, str]] = {}
    for o in objs:
        ns, name = o["metadata"]["namespace"], o["metadata"]["name"]
        sname = o.get("status", {}).get("secretName") or f"{name}-blooio-webhook"
        s = json.loads(c.k("-n", ns, "get", "secret", sname, "-o", "json"))
        digest = hashlib.sha256(json.dumps(s["data"], sort_keys=True).encode()).hexdigest()
        secrets[f"{ns}/{sname}"] = (digest, s["metadata"]["resourceVersion"])
    calls = c.sim("GET", "/_sim/calls")["counts"]
    hooks = c.sim("GET", "/_sim/webhooks")["data"]
    return {
        "webhooks": {
            f"{o['metadata']['namespace']}/{o['metadata']['name']}": o.get("status", {}).get(
                "webhookId"
            )
            for o in objs
        },
        "ready": sum(ready(o) for o in objs),
        "sealed": sum(bool(o.get("status", {}).get("claim")) for o in objs),
        "secrets": secrets,
        "calls": dict(calls),
        "remote": [(h["id"], h["url"]) for h in hooks],
    }


def compare(before: dict[str, Any], after: dict[str, Any], count: int) -> dict[str, Any]:
    calls = Counter(after["calls"])
    calls.subtract(before["calls"])
    non_list = {k: v for k, v in calls.items() if v and not k.startswith("GET ")}
    lists = {k: v for k, v in calls.items() if v and k.startswith("GET ")}
    urls = Counter(url for _, url in after["remote"])
    duplicates = sum(n - 1 for n in urls.values() if n > 1)
    changed_ids = [k for k, v in after["webhooks"].items() if before["webhooks"].get(k) != v]
    changed_data = [k for k, v in after["secrets"].items() if before["secrets"][k][0] != v[0]]
    rewritten = [k for k, v in after["secrets"].items() if before["secrets"][k][1] != v[1]]
    return {
        "resources": len(after["webhooks"]),
        "ready": after["ready"],
        "non_list_calls": sum(non_list.values()),
        "non_list_calls_by_endpoint": non_list,
        "list_calls": sum(lists.values()),
        "remote_webhooks": len(after["remote"]),
        "duplicate_webhooks": duplicates,
        "webhook_ids_changed": len(changed_ids),
        "secrets_data_changed": len(changed_data),
        "secrets_resource_version_changed": len(rewritten),
        "ok": after["ready"] == count
        and not non_list
        and duplicates == 0
        and len(after["remote"]) == count
        and not changed_ids
        and not changed_data,
    }


def settle(c: Cluster, count: int, *, sealed: bool, quiet: float = 45.0) -> float:
    """Every resource Ready (and, for 0.2.0, its claim sealed), then a quiet window in which
    nothing at Blooio but lists happens and every resource stays Ready."""
    t = wait(
        "every resource Ready" + (" and sealed" if sealed else ""),
        lambda: (s := snapshot_light(c))[0] == count and (not sealed or s[1] == count),
        timeout=300,
        interval=3,
    )
    start_calls = c.sim("GET", "/_sim/calls")["counts"]
    end = time.monotonic() + quiet
    while time.monotonic() < end:
        objs = c.bwhs()
        if sum(ready(o) for o in objs) != count:
            raise Failed("a resource left Ready during the quiet window")
        time.sleep(5)
    now = c.sim("GET", "/_sim/calls")["counts"]
    moved = {k: now[k] - start_calls.get(k, 0) for k in now if not k.startswith("GET ")}
    if any(moved.values()):
        raise Failed(f"Blooio calls other than lists in the quiet window: {moved}")
    return t


def snapshot_light(c: Cluster) -> tuple[int, int]:
    objs = c.bwhs()
    return sum(ready(o) for o in objs), sum(bool(o.get("status", {}).get("claim")) for o in objs)


def rollout(c: Cluster) -> None:
    c.k("-n", NS, "rollout", "status", "deploy/blooio-operator", f"--timeout={TIMEOUT}")


def install(c: Cluster, tree: Path, kustomization: Path) -> None:
    """The CRD first, then the manifests (docs/operations.md, "Upgrade")."""
    c.k("apply", "-f", str(tree / "deploy/crds/blooio.com_blooiowebhooks.yaml"))
    c.k("wait", "--for=condition=Established", "crd/blooiowebhooks.blooio.com")
    c.k("apply", "-k", str(kustomization))
    rollout(c)


def scenario(c: Cluster, work: Path, old_src: Path, count: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    api_url = simulator(c)
    old = overlay(old_src, work, "old", OLD_IMAGE, api_url)
    new = overlay(ROOT, work, "new", NEW_IMAGE, api_url)

    print("==> 0.1.0 installed with its manifests", flush=True)
    install(c, old_src, old)
    t0 = time.monotonic()
    c.apply(resources(count))
    results["v010_all_ready_s"] = round(settle(c, count, sealed=False), 1)
    results["v010_create_s"] = round(time.monotonic() - t0, 1)
    base = snapshot(c)
    if base["ready"] != count or len(base["remote"]) != count:
        raise Failed(f"0.1.0: {base['ready']} Ready, {len(base['remote'])} webhooks of {count}")
    print(f"    {count} resources Ready under 0.1.0, {len(base['remote'])} webhooks", flush=True)

    print("==> upgrade to this tree (CRD, then manifests)", flush=True)
    t0 = time.monotonic()
    install(c, ROOT, new)
    results["upgrade_rolled_out_s"] = round(time.monotonic() - t0, 1)
    results["upgrade_settled_s"] = round(settle(c, count, sealed=True), 1)
    results["upgrade"] = compare(base, snapshot(c), count)
    print(f"    upgrade: {json.dumps(results['upgrade'])}", flush=True)

    print("==> roll back to 0.1.0 (CRD, then manifests)", flush=True)
    mid = snapshot(c)
    t0 = time.monotonic()
    install(c, old_src, old)
    results["rollback_rolled_out_s"] = round(time.monotonic() - t0, 1)
    results["rollback_settled_s"] = round(settle(c, count, sealed=False), 1)
    results["rollback"] = compare(mid, snapshot(c), count)
    results["rollback_vs_before_upgrade"] = compare(base, snapshot(c), count)
    print(f"    rollback: {json.dumps(results['rollback'])}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.node.e2e_upgrade")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".build" / "e2e-upgrade")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--from-ref", default="v0.1.0")
    parser.add_argument(
        "--image-archive", type=Path, default=ROOT / ".build" / "image" / "blooio-operator.oci.tar"
    )
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"from": args.from_ref, "count": args.count}
    node = LocalNode(work / "node")
    rc = 1
    try:
        old_src, sha = old_tree(work, args.from_ref)
        results["from_commit"] = sha
        t0 = time.monotonic()
        old_archive = work / "blooio-operator-0.1.0.oci.tar"
        build_old_image(old_src, sha, old_archive)
        results["old_image_build_s"] = round(time.monotonic() - t0, 1)
        if not args.image_archive.is_file():
            raise NodeError(f"{args.image_archive} missing: run `make image` first")
        node.build()
        node.up()
        for archive, image in ((args.image_archive, NEW_IMAGE), (old_archive, OLD_IMAGE)):
            node.import_image(archive, image)
            if image not in node.images():
                raise NodeError(f"{image} not in containerd after import")
        results.update(scenario(Cluster(node.kubeconfig), work, old_src, args.count))
        rc = 0 if results["upgrade"]["ok"] and results["rollback"]["ok"] else 1
    except Stopped as exc:
        print(f"\n{exc}: tearing down", file=sys.stderr, flush=True)
        rc = 143
    except (NodeError, Failed, subprocess.CalledProcessError) as exc:
        print(f"e2e-upgrade: {exc}", file=sys.stderr, flush=True)
        results["error"] = str(exc)[-2000:]
    finally:
        problems = node.down() + leftovers(node.work_dir)
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("e2e-upgrade results: " + json.dumps(results, indent=2), flush=True)
        if problems:
            print("teardown left behind:\n  " + "\n  ".join(problems), file=sys.stderr)
            rc = rc or 1
    print("e2e-upgrade " + ("passed" if rc == 0 else f"FAILED (exit {rc})"), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
