"""Issue 20: two operator processes with leader election on the real control plane.

Both run `blooio-operator run` with leader election on a Lease in blooio-system (the
shipped Role of deploy/manifests/leader-election.yaml), with short Lease timings (4 s
lease, 3 s renew deadline, 0.5 s retry). Each uses its own API key of the same Blooio
organisation, so the simulator's call log tells their calls apart (``api_key_id``) while
both see the same webhooks.

- SIGKILL the leader in the middle of a burst of creates: the standby takes over and
  finishes; every resource Ready, no duplicate or orphan webhook, every Secret holding
  its webhook's current signing secret. The failover time is printed.
  The failover time and the time from the kill to the next resource handled (Ready) are
  printed.
- SIGSTOP the leader in the middle of a burst for longer than the Lease, let the standby
  take over and finish, then SIGCONT: the old leader exits (status 3) without a single
  Blooio call and without a Kubernetes write after the resume, and the fleet is as the
  new leader left it. Counted three ways: the simulator's call log (by API key, with
  timestamps); the kube-apiserver's audit log (``bench/audit.py``, every write by the
  paused replica's own ServiceAccount); the resourceVersions of every object it could
  write plus the count of Events. This test has a control plane of its own, started
  with an audit policy, and each replica runs as its own ServiceAccount (the shipped
  RBAC bound to a second one), so the audit log tells their writes apart.

Both burst tests create 200 resources at once (issue 20).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from bench import audit
from blooio_operator.devenv.controlplane import ControlPlane, ensure_binary
from tests.chaos.invariants import fleet_problems
from tests.helpers import FAST_OPERATOR_ENV, wait_for
from tests.integration.conftest import (
    API_KEY,
    CRD_DIR,
    MANIFESTS,
    OperatorFactory,
    OperatorProcess,
    Simulator,
    kubeconfig_for_token,
    load_yaml_docs,
    token_for,
)
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration

N = 200
LEASE_NS = "blooio-system"
OTHER_KEY = "bl_test_second_replica_key_0123456789"
EXIT_TERM_OVER = 3  # blooio_operator.leader.EXIT_TERM_OVER
LEASE_ENV = {
    "BLOOIO_LEADER_ELECT": "true",
    "BLOOIO_LEADER_ELECTION_NAMESPACE": LEASE_NS,
    "BLOOIO_LEASE_DURATION_SECONDS": "4",
    "BLOOIO_LEASE_RENEW_DEADLINE_SECONDS": "3",
    "BLOOIO_LEASE_RETRY_PERIOD_SECONDS": "0.5",
    # The seal over status claims, shared by the replicas as the Deployment shares its env
    # (by default it derives from the API key, which differs between the two here).
    "BLOOIO_CLAIM_KEY": "test-claim-key-shared-by-both-replicas-0123456789",
    # Quieter than the fast defaults, so the fleet settles between bursts.
    "BLOOIO_LOG_LEVEL": "INFO",
    "BLOOIO_DRIFT_INTERVAL_SECONDS": "30",
    "BLOOIO_SECRET_CHECK_INTERVAL_SECONDS": "30",
    # Off: its first check of each resource writes status.deliveries, spread over the
    # interval, so the new leader would write now and then in the quiet window below.
    "BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS": "0",
}


def url(i: int) -> str:
    return f"https://r{i}.ha.example.com/blooio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Replica:
    """One operator process of the pair, with its key's id and its ports."""

    def __init__(self, op: OperatorProcess, name: str, key_id: str, health: int, metrics: int):
        self.op, self.name, self.key_id = op, name, key_id
        self.health, self.metrics = health, metrics

    def calls(self, sim: Simulator, since: float = 0.0) -> list[dict[str, Any]]:
        return [c for c in sim.calls() if c["api_key_id"] == self.key_id and c["ts"] >= since]

    def creates(self, sim: Simulator) -> int:
        return sum(1 for c in self.calls(sim) if c["endpoint"] == "POST /webhooks")


class World:
    def __init__(self, kube_api: k8s.ApiClient, namespace: str, sim: Simulator) -> None:
        self.kube_api, self.ns, self.sim = kube_api, namespace, sim
        self.hooks = Webhooks(kube_api, namespace)
        self.core = k8s.CoreV1Api(kube_api)
        self.coordination = k8s.CoordinationV1Api(kube_api)
        self.lease_name = f"blooio-operator-{namespace}"

    def holder(self) -> str:
        try:
            lease = self.coordination.read_namespaced_lease(self.lease_name, LEASE_NS)
        except k8s.ApiException:
            return ""
        return str(lease.spec.holder_identity or "")

    def objects(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.hooks.custom.list_namespaced_custom_object(
            "blooio.com", "v1alpha1", self.ns, "blooiowebhooks"
        )["items"]
        return items

    def secrets(self) -> dict[tuple[str, str], dict[str, str]]:
        return {
            (self.ns, s.metadata.name): {
                k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()
            }
            for s in self.core.list_namespaced_secret(self.ns).items
        }

    def ready_names(self) -> set[str]:
        return {
            o["metadata"]["name"]
            for o in self.objects()
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (o.get("status") or {}).get("conditions", [])
            )
        }

    def ready(self) -> int:
        return len(self.ready_names())

    def problems(self) -> list[Any]:
        return fleet_problems(self.objects(), self.secrets(), self.sim.webhooks(), ())

    def writable_versions(self) -> dict[str, str]:
        """resourceVersion of everything the operator writes in the namespace."""
        versions = {
            f"bwh/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in self.objects()
        }
        for s in self.core.list_namespaced_secret(self.ns).items:
            versions[f"secret/{s.metadata.name}"] = s.metadata.resource_version
        versions["events"] = str(len(self.core.list_namespaced_event(self.ns).items))
        return versions

    def create_burst(self) -> None:
        for i in range(N):
            self.hooks.create(f"r{i}", {"url": url(i), "eventTypes": ["message.received"]})

    def delete_lease(self) -> None:
        try:
            self.coordination.delete_namespaced_lease(self.lease_name, LEASE_NS)
        except k8s.ApiException:
            pass


@pytest.fixture
def world(kube_api: k8s.ApiClient, namespace: str, simulator: Simulator) -> Iterator[World]:
    w = World(kube_api, namespace, simulator)
    yield w
    w.delete_lease()


# --- a control plane with an audit log (the SIGSTOP test) ------------------------------------

SA_NS = "blooio-system"
SA_OF = {"a": "blooio-operator", "b": "blooio-operator-b"}  # one ServiceAccount per replica


def sa_user(name: str) -> str:
    return f"system:serviceaccount:{SA_NS}:{name}"


@dataclass
class Audited:
    cp: ControlPlane
    api: k8s.ApiClient
    log: audit.AuditLog
    kubeconfigs: dict[str, Path]  # replica ("a", "b") -> its ServiceAccount's kubeconfig


def bind_also(doc: dict[str, Any], account: str) -> dict[str, Any]:
    """A shipped (Cluster)RoleBinding that also binds ``account`` in SA_NS."""
    extra = {"kind": "ServiceAccount", "name": account, "namespace": SA_NS}
    return {**doc, "subjects": [*doc.get("subjects", []), extra]}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    """This module's own control plane, with bench/audit.py's policy (every write of the
    two replicas' ServiceAccounts), the CRD, and the shipped RBAC and Lease Role bound to
    both ServiceAccounts. The session's control plane has no audit log."""
    from kubernetes import config as k8s_config

    work = tmp_path_factory.mktemp("audited")
    policy, log_path = work / "audit-policy.yaml", work / "audit.log"
    policy.write_text(audit.policy_yaml([sa_user(name) for name in SA_OF.values()]))
    cp = ControlPlane(
        work / "controlplane",
        binary=ensure_binary(),
        extra_apiserver_args=audit.apiserver_args(policy, log_path),
    ).start()
    try:
        api = k8s_config.new_client_from_config(config_file=str(cp.kubeconfig))
        crd = CRD_DIR / "blooio.com_blooiowebhooks.yaml"
        subprocess.run(
            ["kubectl", "--kubeconfig", str(cp.kubeconfig), "apply", "-f", str(crd)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        custom = k8s.CustomObjectsApi(api)
        wait_for(
            lambda: custom.list_cluster_custom_object("blooio.com", "v1alpha1", "blooiowebhooks"),
            timeout=60,
            message="blooiowebhooks served",
        )
        core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=SA_NS)))
        for manifest in ("rbac.yaml", "leader-election.yaml"):
            for doc in load_yaml_docs(MANIFESTS / manifest):
                kind, ns = doc["kind"], doc["metadata"].get("namespace")
                if kind == "ClusterRole":
                    rbac.create_cluster_role(doc)
                elif kind == "ClusterRoleBinding":
                    rbac.create_cluster_role_binding(bind_also(doc, SA_OF["b"]))
                elif kind == "Role":
                    rbac.create_namespaced_role(ns, doc)
                elif kind == "RoleBinding":
                    rbac.create_namespaced_role_binding(ns, bind_also(doc, SA_OF["b"]))
        kubeconfigs = {
            replica: kubeconfig_for_token(cp, token_for(api, SA_NS, sa), work / f"kc-{replica}")
            for replica, sa in SA_OF.items()
        }
        yield Audited(cp, api, audit.AuditLog(log_path), kubeconfigs)
    finally:
        cp.stop()


@pytest.fixture
def audited_world(
    audited: Audited, simulator: Simulator, tmp_path: Path
) -> Iterator[tuple[World, OperatorFactory]]:
    """A namespace on the audited control plane, its World, and a factory starting an
    operator there as the ServiceAccount of the replica its POD_NAME names (op-a, op-b)."""
    ns = f"t-{os.urandom(5).hex()}"
    core = k8s.CoreV1Api(audited.api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
    started: list[OperatorProcess] = []

    def start(*, args: list[str] | None = None, **env: str) -> OperatorProcess:
        replica = env["POD_NAME"].removeprefix("op-")
        base = {"BLOOIO_API_URL": simulator.url, "BLOOIO_API_KEY": API_KEY, **FAST_OPERATOR_ENV}
        op = OperatorProcess(
            audited.kubeconfigs[replica],
            tmp_path / f"operator-{replica}-{len(started)}.log",
            {**base, **env},
            ["--namespace", ns, *(args or [])],
        ).start()
        started.append(op)
        return op

    w = World(audited.api, ns, simulator)
    yield w, start
    for op in started:
        if op.proc is not None and op.proc.poll() is None:
            os.kill(op.proc.pid, signal.SIGCONT)  # a stopped process would not see SIGTERM
        op.stop()
        print(f"--- {op.log_path.name} (tail) ---\n{op.logs()[-6000:]}")
    w.delete_lease()
    core.delete_namespace(ns)


def second_key_of_the_same_org(sim: Simulator) -> tuple[str, str]:
    """The ids of API_KEY and of a second key of its organisation (added now)."""
    keys = f"{sim.admin.base_url.rstrip('/')}/_sim/keys"
    first = httpx.post(keys, json={"api_key": API_KEY}, timeout=10).json()
    second = httpx.post(
        keys, json={"api_key": OTHER_KEY, "organization": first["organization_id"]}, timeout=10
    ).json()
    assert second["organization_id"] == first["organization_id"]
    return first["api_key_id"], second["api_key_id"]


def start_pair(start_operator: OperatorFactory, world: World) -> tuple[Replica, Replica]:
    """A leader (a) and, once a leads, a standby (b)."""
    key_ids = dict(zip(("a", "b"), second_key_of_the_same_org(world.sim), strict=True))
    keys = {"a": API_KEY, "b": OTHER_KEY}
    replicas: dict[str, Replica] = {}
    for name in ("a", "b"):
        health, metrics = free_port(), free_port()
        op = start_operator(
            args=["--health-port", str(health)],
            BLOOIO_API_KEY=keys[name],
            BLOOIO_METRICS_PORT=str(metrics),
            BLOOIO_LEADER_ELECTION_LEASE_NAME=world.lease_name,
            POD_NAME=f"op-{name}",
            **LEASE_ENV,
        )
        replicas[name] = Replica(op, name, key_ids[name], health, metrics)
        if name == "a":
            wait_for(lambda: world.holder().startswith("op-a_"), timeout=60, message="a leads")
    b = replicas["b"]
    wait_for(
        lambda: "standby: waiting for Lease" in b.op.logs(), timeout=60, message="b is a standby"
    )
    return replicas["a"], b


def leader_metric(port: int) -> float | None:
    code, body = http_get(port, "/metrics")
    if code != 200:
        return None
    for line in body.splitlines():
        if line.startswith("blooio_operator_leader "):
            return float(line.split()[1])
    return None


def test_standby_takes_over_a_killed_leader_mid_burst(
    world: World, start_operator: OperatorFactory
) -> None:
    # Creates answer in 0.3 s, so that the burst is still going when the leader dies.
    world.sim.admin.add_fault("latency", endpoint="POST /webhooks", ms=300)
    a, b = start_pair(start_operator, world)

    # Probes answer on both; /leader and the metric tell the leader from the standby.
    for replica in (a, b):
        for path in ("/healthz", "/readyz"):
            wait_for(
                lambda r=replica, p=path: http_get(r.health, p)[0] == 200,
                timeout=30,
                message=f"{replica.name} {path}",
            )
    assert json.loads(http_get(a.health, "/readyz")[1])["role"] == "leader"
    assert json.loads(http_get(b.health, "/readyz")[1])["role"] == "standby"
    assert http_get(a.health, "/leader")[0] == 200
    assert http_get(b.health, "/leader")[0] == 503
    wait_for(lambda: leader_metric(a.metrics) == 1.0, timeout=30, message="a's metric 1")
    assert leader_metric(b.metrics) == 0.0
    assert "blooio_operator_blooio_up" not in http_get(b.metrics, "/metrics")[1]

    world.create_burst()
    wait_for(
        lambda: a.creates(world.sim) >= N // 3,
        timeout=120,
        message=f"{N // 3} creates from the leader",
    )
    a.op.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    killed = time.time()
    a.op.wait_exit(10)
    posts_before = a.creates(world.sim)
    ready_at_kill = world.ready_names()

    wait_for(lambda: world.holder().startswith("op-b_"), timeout=30, message="b leads")
    took_over = time.time()
    wait_for(
        lambda: world.ready_names() - ready_at_kill,
        timeout=60,
        interval=0.1,
        message="a resource Ready after the kill",
    )
    next_ready = time.time()
    first_b = wait_for(lambda: b.calls(world.sim, since=killed), timeout=60, message="b's calls")
    handled = min(c["ts"] for c in first_b)
    wait_for(lambda: world.ready() == N, timeout=300, interval=1, message=f"{N} Ready")
    all_ready = time.time()
    print(
        f"SIGKILL after {posts_before} of {N} creates ({len(ready_at_kill)} Ready): Lease "
        f"taken over {took_over - killed:.1f} s after the kill, first Blooio call by the new "
        f"leader {handled - killed:.1f} s after it, next resource Ready "
        f"{next_ready - killed:.1f} s after it, all {N} Ready {all_ready - killed:.1f} s after it"
    )
    wait_for(lambda: not world.problems(), timeout=60, interval=1, message="no fleet problems")
    assert len(world.sim.webhooks()) == N
    assert json.loads(http_get(b.health, "/readyz")[1])["role"] == "leader"
    assert leader_metric(b.metrics) == 1.0
    assert b.op.alive()


def test_a_paused_leader_sends_nothing_after_it_resumes(
    audited: Audited, audited_world: tuple[World, OperatorFactory]
) -> None:
    world, start_operator = audited_world
    # Creates answer slowly, so that many are in flight when the leader is paused: on
    # resuming, it holds answers whose Secrets and statuses it would write.
    world.sim.admin.add_fault("latency", endpoint="POST /webhooks", ms=1500)
    a, b = start_pair(start_operator, world)
    world.create_burst()
    wait_for(
        lambda: a.creates(world.sim) >= N // 4,
        timeout=120,
        message=f"{N // 4} creates from the leader",
    )
    pid = a.op.proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        wait_for(lambda: world.holder().startswith("op-b_"), timeout=30, message="b leads")
        took_over = time.time()
        wait_for(lambda: world.ready() == N, timeout=300, interval=1, message=f"{N} Ready")
        wait_for(lambda: not world.problems(), timeout=90, interval=1, message="no problems")
        # Quiet: nothing written for a moment (b's periodic checks only read).
        snapshot = world.writable_versions()

        def settled() -> bool:
            nonlocal snapshot
            time.sleep(1.0)
            now = world.writable_versions()
            same = now == snapshot
            snapshot = now
            return same

        wait_for(settled, timeout=60, interval=0, message="the fleet settled")
        lease_before = world.coordination.read_namespaced_lease(world.lease_name, LEASE_NS)
        calls_before = len(world.sim.calls())
        print(
            f"SIGSTOP after {a.creates(world.sim)}"
            f" creates: b took over {took_over - stopped:.1f} s after the stop; "
            f"paused for {time.time() - stopped:.1f} s"
        )
    finally:
        resumed = time.time()
        os.kill(pid, signal.SIGCONT)
    status = a.op.wait_exit(30)
    exited = time.time()

    after = a.calls(world.sim, since=resumed)
    writes = {
        k: (v, snapshot.get(k))
        for k, v in world.writable_versions().items()
        if snapshot.get(k) != v
    }
    for key in writes:
        kind, name = key.split("/", 1) if "/" in key else (key, "")
        if kind == "bwh":
            obj = world.hooks.get(name) or {}
            fields = [
                (f.get("manager"), f.get("subresource"), f.get("time"))
                for f in obj.get("metadata", {}).get("managedFields", [])
            ]
            print(
                f"{key} changed after the resume: managedFields {fields}; "
                f"status {json.dumps(obj.get('status'))[:1500]}"
            )
    lease_after = world.coordination.read_namespaced_lease(world.lease_name, LEASE_NS)
    # The audit log: every write a's ServiceAccount made (b runs as another one).
    writes_of_a = [w for w in audited.log.since(0) if w.user == sa_user(SA_OF["a"])]
    before_stop = [w for w in writes_of_a if w.ts < stopped]
    after_resume = [w for w in writes_of_a if w.ts >= resumed]
    log = a.op.logs()
    reason = next((line for line in log.splitlines() if "leadership term over" in line), "")
    print(
        f"SIGCONT: exited {exited - resumed:.2f} s later with status {status}; Blooio calls "
        f"after the resume: {len(after)}; Kubernetes writes after the resume: "
        f"{len(after_resume)} in the audit log ({len(before_stop)} by the same identity "
        f"before the stop), {len(writes)} objects changed; {reason.strip()[-160:]}"
    )
    assert status == EXIT_TERM_OVER
    assert after == [], after
    assert before_stop, "the audit log holds no write of a's ServiceAccount at all"
    assert after_resume == [], after_resume
    assert writes == {}, writes
    assert lease_after.spec.holder_identity == lease_before.spec.holder_identity
    assert lease_after.spec.lease_transitions == lease_before.spec.lease_transitions
    assert reason, log[-3000:]
    # The new leader alone made the calls after the resume (reads of its checks at most).
    assert all(c["method"] == "GET" for c in world.sim.calls()[calls_before:])
    assert not world.problems()
    assert len(world.sim.webhooks()) == N
    assert b.op.alive()


# --- sharding -------------------------------------------------------------------------------


def shard_url(name: str) -> str:
    return f"https://{name}.shards.example.com/blooio"


def test_two_shards_and_a_hand_off_by_relabelling(
    world: World, start_operator: OperatorFactory
) -> None:
    """Two instances, each with its own selector and Lease, each serves only its resources;
    relabelling one moves it to the other shard without deleting anything."""
    key_ids = dict(zip(("a", "b"), second_key_of_the_same_org(world.sim), strict=True))
    keys = {"a": API_KEY, "b": OTHER_KEY}
    shards: dict[str, Replica] = {}
    for shard in ("a", "b"):
        op = start_operator(
            args=["--selector", f"blooio.com/shard={shard}"],
            BLOOIO_API_KEY=keys[shard],
            BLOOIO_LEADER_ELECTION_LEASE_NAME=f"{world.lease_name}-{shard}",
            POD_NAME=f"shard-{shard}",
            **LEASE_ENV,
        )
        shards[shard] = Replica(op, shard, key_ids[shard], 0, 0)
    for shard in ("a", "b"):
        wait_for(
            lambda s=shard: world.coordination.read_namespaced_lease(
                f"{world.lease_name}-{s}", LEASE_NS
            ).spec.holder_identity.startswith(f"shard-{s}_"),
            timeout=60,
            message=f"shard {shard} leads its own Lease",
        )

    names = {"a": ["sa0", "sa1", "sa2"], "b": ["sb0", "sb1", "sb2"]}
    for shard, shard_names in names.items():
        for name in shard_names:
            world.hooks.custom.create_namespaced_custom_object(
                "blooio.com",
                "v1alpha1",
                world.ns,
                "blooiowebhooks",
                {
                    "apiVersion": "blooio.com/v1alpha1",
                    "kind": "BlooioWebhook",
                    "metadata": {"name": name, "labels": {"blooio.com/shard": shard}},
                    "spec": {"url": shard_url(name), "eventTypes": ["message.received"]},
                },
            )
    # And one that no shard serves.
    world.hooks.create("nobody", {"url": shard_url("nobody")})
    wait_for(lambda: world.ready() == 6, timeout=120, interval=0.5, message="6 Ready")

    by_url = {w["url"]: w for w in world.sim.webhooks()}
    assert set(by_url) == {shard_url(n) for n in names["a"] + names["b"]}  # not "nobody"
    assert world.hooks.status("nobody") == {} or not world.hooks.status("nobody").get("webhookId")
    for shard in ("a", "b"):
        ids = {by_url[shard_url(n)]["id"] for n in names[shard]}
        assert {world.hooks.status(n)["webhookId"] for n in names[shard]} == ids
        creates = [c for c in shards[shard].calls(world.sim) if c["endpoint"] == "POST /webhooks"]
        assert len(creates) == 3, f"shard {shard} made {len(creates)} creates"

    # The hand-off: sa0 moves from shard a to shard b.
    before = world.hooks.get("sa0")
    assert before is not None
    webhook_id = before["status"]["webhookId"]
    secret_before = world.hooks.secret_data(before["status"]["secretName"])
    relabelled = time.time()
    world.hooks.patch("sa0", {"metadata": {"labels": {"blooio.com/shard": "b"}}})
    # Shard b now serves it: an edit is shard b's PATCH of the same webhook.
    world.hooks.patch("sa0", {"spec": {"eventTypes": ["message.received", "message.sent"]}})

    def patched_by_b() -> bool:
        hook = world.sim.webhook(webhook_id) or {}
        return set(hook.get("event_types", [])) == {"message.received", "message.sent"}

    wait_for(patched_by_b, timeout=60, message="sa0's edit applied at Blooio")
    after = world.hooks.get("sa0")
    assert after is not None
    assert after["status"]["webhookId"] == webhook_id
    assert "blooio.com/finalizer" in after["metadata"]["finalizers"]
    assert world.hooks.secret_data(after["status"]["secretName"]) == secret_before
    path = f"/v4/webhooks/{webhook_id}"
    a_since = [c for c in shards["a"].calls(world.sim, since=relabelled) if c["path"] == path]
    b_since = [c for c in shards["b"].calls(world.sim, since=relabelled) if c["path"] == path]
    assert a_since == [], a_since
    assert [c["method"] for c in b_since if c["method"] != "GET"] == ["PATCH"]
    assert not [c for c in world.sim.calls() if c["method"] == "DELETE"]
    assert len(world.sim.webhooks()) == 6

    # Deleting it is shard b's business now, through the same finalizer.
    world.hooks.delete("sa0")
    wait_for(lambda: world.hooks.get("sa0") is None, timeout=60, message="sa0 deleted")
    deletes = [c for c in world.sim.calls() if c["method"] == "DELETE"]
    assert [(c["path"], c["api_key_id"]) for c in deletes] == [(path, key_ids["b"])]
    assert world.sim.webhook(webhook_id) is None
    for shard in ("a", "b"):
        assert shards[shard].op.alive()
    world.coordination.delete_namespaced_lease(f"{world.lease_name}-a", LEASE_NS)
    world.coordination.delete_namespaced_lease(f"{world.lease_name}-b", LEASE_NS)
