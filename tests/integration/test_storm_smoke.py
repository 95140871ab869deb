"""A short storm (tests/chaos/storm.py) inside the test session: 60 resources in three
namespaces, every kind of change during bulk creation, 3 operator kills, a kube-apiserver
restart and Blooio faults on every endpoint; then every fleet count must reach zero.

The full storm is ``python -m tests.chaos.storm --seed N`` (300 resources, 12 kills;
``make storm`` runs five seeds).

``test_storm_ha_smoke``: the same with two replicas under leader election
(tests/chaos/storm_ha.py, ``make storm-ha`` for the full one), 30 resources, every
disruption a SIGSTOP of the leader past its 4 s Lease: each resumed leader must exit 3
without a Blooio call, and every fleet count must reach zero.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from blooio_operator.devenv.controlplane import ControlPlane
from tests.chaos.invariants import FLEET_KINDS
from tests.chaos.run import World
from tests.chaos.storm import OP_KINDS, Storm, StormConfig, operator_env
from tests.chaos.storm_ha import (
    LEASE_ENV,
    LEASE_NAME,
    LEASE_NS,
    OTHER_KEY,
    HAStorm,
    HAStormReport,
    HAWorld,
    Pair,
    Replica,
    second_key,
    start_pair,
)
from tests.integration.conftest import OperatorFactory, OperatorProcess, Simulator
from tests.integration.webhooks import Webhooks

SEED = 3
CONFIG = StormConfig(
    resources=60,
    namespaces=3,
    kills=3,
    create_seconds=15.0,
    ops=(3, 6),
    converge_seconds=120.0,
    tail_seconds=60.0,
)


@pytest.fixture
def more_namespaces(kube_api: k8s.ApiClient) -> Iterator[list[str]]:
    core = k8s.CoreV1Api(kube_api)
    names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(CONFIG.namespaces - 1)]
    for name in names:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield names
    for name in names:
        try:
            core.delete_namespace(name)
        except k8s.ApiException:
            pass


def test_storm_smoke(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    namespace: str,
    more_namespaces: list[str],
    simulator: Simulator,
    start_operator: OperatorFactory,
    tmp_path: Path,
) -> None:
    namespaces = [namespace, *more_namespaces]
    env = operator_env(CONFIG.resources)
    world = World(
        Webhooks(kube_api, namespace),
        simulator,
        start_operator(namespaces=namespaces, **env),
        restart_apiserver=control_plane.restart,
        namespaces=namespaces,
    )
    report = Storm(world, CONFIG, SEED, dump_dir=tmp_path / "storm").run()
    print(report.render())
    assert report.kills == CONFIG.kills, report.render()
    assert report.apiserver_restarts == 1, report.render()
    assert all(report.ops[kind] > 0 for kind in OP_KINDS), report.render()
    assert not report.op_errors, report.render()
    assert sum(report.faults_fired.values()) > 0, report.render()
    assert report.converge_seconds is not None, report.render()
    assert all(report.count(kind) == 0 for kind in FLEET_KINDS), report.render()


HA_SEED = 5
HA_CONFIG = StormConfig(
    resources=30,
    namespaces=3,
    kills=2,
    kill_gap=(1.0, 3.0),
    create_seconds=10.0,
    ops=(2, 4),
    converge_seconds=120.0,
    tail_seconds=20.0,
)


def test_storm_ha_smoke(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    namespace: str,
    more_namespaces: list[str],
    simulator: Simulator,
    start_operator: OperatorFactory,
    tmp_path: Path,
) -> None:
    namespaces = [namespace, *more_namespaces]
    env = {**operator_env(HA_CONFIG.resources), **LEASE_ENV}
    a_id, b_id = second_key(simulator)
    a = start_operator(namespaces=namespaces, POD_NAME="op-a", **env)
    b_env = {**a.env, "BLOOIO_API_KEY": OTHER_KEY, "POD_NAME": "op-b"}
    b = OperatorProcess(a.kubeconfig, tmp_path / "operator-b.log", b_env, list(a.args))
    pair = Pair(kube_api, [])
    try:
        pair = start_pair(kube_api, Replica("op-a", a, a_id), Replica("op-b", b, b_id))
        world = HAWorld(
            Webhooks(kube_api, namespace),
            simulator,
            a,
            restart_apiserver=control_plane.restart,
            namespaces=namespaces,
            pair=pair,
        )
        report = HAStorm(world, HA_CONFIG, HA_SEED, "partition", dump_dir=tmp_path / "s").run()
    finally:
        pair.stop()
        b.stop()
        print(f"--- op-b log (tail) ---\n{b.logs()[-6000:]}")
        k8s.CoordinationV1Api(kube_api).delete_namespaced_lease(LEASE_NAME, LEASE_NS)
    print(report.render())
    assert isinstance(report, HAStormReport)
    assert report.kills == HA_CONFIG.kills, report.render()
    assert len(report.disruptions) == HA_CONFIG.kills, report.render()
    assert all(d.exit_status == 3 for d in report.disruptions), report.render()
    assert all(d.calls_after_resume == 0 for d in report.disruptions), report.render()
    assert not report.ha_problems, report.render()
    assert report.converge_seconds is not None, report.render()
    assert all(report.count(kind) == 0 for kind in FLEET_KINDS), report.render()
