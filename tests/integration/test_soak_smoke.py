"""A short soak (tests/chaos/soak.py) inside the test session: 30 resources in two
namespaces, a 45-second hour, three fault classes (every endpoint 503, the key revoked,
kube-apiserver restarts with deletions in the gap). Every count must stay within its
budget, every fleet count must reach zero after each fault, and the same operator process
must then handle a new resource and an edit.

It builds a world of its own (the soak counts Kubernetes writes from the apiserver's audit
log, which the session's control plane does not keep). The full soak is ``make soak``
(100 resources, all six classes, a three-minute hour).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.soak import Soak, operator_env
from tests.chaos.soak_budget import Scale
from tests.chaos.soak_fleet import SoakConfig
from tests.chaos.soak_world import soak_world

CONFIG = SoakConfig(
    resources=30,
    namespaces=2,
    hour_seconds=45.0,
    classes="ade",
    restarts=2,
    settle_seconds=120.0,
    converge_seconds=60.0,
    proof_seconds=30.0,
)


@pytest.mark.timeout(420)
def test_soak_smoke(tmp_path: Path) -> None:
    began = time.monotonic()
    env = operator_env(Scale(CONFIG.hour_seconds), CONFIG.log_level)
    with soak_world(tmp_path, namespaces=["soak-0", "soak-1"], env=env) as world:
        report = Soak(world, CONFIG, seed=5).run()
    text = report.render()
    print(text, f"\nsoak smoke: {time.monotonic() - began:.0f}s")
    assert [c.key for c in report.classes] == list(CONFIG.classes), text
    for result in report.classes:
        # The soak did its part: the whole fleet, the fault for the whole hour.
        assert result.resources >= CONFIG.resources, text
        assert result.counts.seconds >= CONFIG.hour_seconds, text
        assert not result.errors, text
    assert report.classes[0].counts.calls_total > 0, text
    assert not report.failed, text
