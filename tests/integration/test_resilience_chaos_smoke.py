"""A short chaos run (tests/chaos/run.py) inside the test session, so the runner cannot rot.

Same world as the other integration tests: the session's control plane, a fresh
namespace, a simulator and the operator process as its ServiceAccount. The full run is
``python -m tests.chaos.run --iterations 100`` (``make chaos``).
"""

from __future__ import annotations

from kubernetes import client as k8s

from blooio_operator.devenv.controlplane import ControlPlane
from tests.chaos.run import Chaos, World
from tests.integration.conftest import OperatorFactory, Simulator
from tests.integration.webhooks import Webhooks

SEED = 14  # crash points in create and replace, commit-then-drop on a create


def test_chaos_smoke(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    world = World(
        Webhooks(kube_api, namespace),
        simulator,
        start_operator(),
        restart_apiserver=control_plane.restart,
    )
    summary = Chaos(world, SEED).run(3, max_seconds=180)
    print(summary.render())
    assert summary.runs == 3, summary.render()
    assert not summary.problems, summary.render()
    assert sum(summary.scenarios.values()) == 3
