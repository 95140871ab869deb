"""A short storm (tests/chaos/storm.py) inside the test session: 60 resources in three
namespaces, every kind of change during bulk creation, 3 operator kills, a kube-apiserver
restart and Blooio faults on every endpoint; then every fleet count must reach zero.

The full storm is ``python -m tests.chaos.storm --seed N`` (300 resources, 12 kills;
``make storm`` runs five seeds).
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
from tests.integration.conftest import OperatorFactory, Simulator
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
