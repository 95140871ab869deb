"""Issue 19, item 4: an unreadable diff base is ignored with one warning, and the resource
is handled.

kopf reads the last-handled configuration from ``status.kopf.last-handled-configuration``
or, for resources handled by an earlier version, from the annotation
``operator.blooio.com/last-handled-configuration``. Either can hold anything the API
server accepts (a string, or anything at all under the preserve-unknown ``status.kopf``);
one that did not decode made kopf's fetch raise on every event, so the resource was never
handled again: not created, not updated, not deleted. The same holds for kopf's record of
each handler's progress (``status.kopf.<handler id>``): ``handlers.diffbase.StatusProgress``
reads it defensively, once kopf is configured with it.
"""

from __future__ import annotations

import kopf
import pytest
from kubernetes import client as k8s

from blooio_operator.handlers.diffbase import StatusProgress
from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, Simulator
from tests.integration.webhooks import GROUP, PLURAL, VERSION, Webhooks

pytestmark = pytest.mark.integration
URL = "https://orders.shop.example.com/blooio"
EDITED = "https://edited.shop.example.com/blooio"
LEGACY = "operator.blooio.com/last-handled-configuration"
WARNING = "last-handled-configuration is unreadable"


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


def _edit_is_applied(hooks: Webhooks, simulator: Simulator, name: str) -> None:
    hooks.patch(name, {"spec": {"url": EDITED}})
    wait_for(
        lambda: hooks.status(name).get("observedGeneration") == 2,
        timeout=30,
        message=f"{name} handled at generation 2",
    )
    status = hooks.wait_ready(name, timeout=30)
    remote = simulator.webhook(status["webhookId"])
    assert remote is not None
    assert remote["url"] == EDITED


def _deletion_completes(hooks: Webhooks, name: str) -> None:
    hooks.delete(name)
    wait_for(lambda: hooks.get(name) is None, timeout=30, message=f"{name} deleted")


def test_unreadable_legacy_annotation_is_ignored_and_the_resource_handled(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    # As after an upgrade: no diff base in status yet, only the legacy annotation.
    hooks.create("legacy", {"url": URL}, annotations={LEGACY: '{"spec": {"url": "https://'})
    op = start_operator()
    status = hooks.wait_ready("legacy", timeout=30)  # was never handled at all
    assert simulator.webhook(status["webhookId"]) is not None
    _edit_is_applied(hooks, simulator, "legacy")
    _deletion_completes(hooks, "legacy")
    assert op.logs().count(WARNING) == 1, op.logs()[-4000:]


@pytest.mark.parametrize(
    "stored",
    ['{"spec": {"url": ', "[1, 2]", {"spec": {"url": URL}}, '{"metadata": "x"}'],
    ids=["truncated", "not-an-object", "not-a-string", "bad-metadata"],
)
def test_unreadable_status_diff_base_is_ignored_and_the_resource_handled(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    kube_api: k8s.ApiClient,
    namespace: str,
    stored: object,
) -> None:
    op = start_operator()
    hooks.create("restored", {"url": URL})
    hooks.wait_ready("restored")
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "restored",
        {"status": {"kopf": {"last-handled-configuration": stored}}},
    )
    _edit_is_applied(hooks, simulator, "restored")
    _deletion_completes(hooks, "restored")
    assert op.logs().count(WARNING) == 1, op.logs()[-4000:]


# --- kopf's handler progress (status.kopf.<handler id>) ------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        [1, 2],
        "junk",
        {"started": "not a time"},
        {"started": "2026-01-01T00:00:00"},  # no offset: kopf subtracts it from an aware now
        {"delayed": "2099-01-01T00:00:00+00:00"},  # a retry that never comes
        {"retries": "many"},
        {"subrefs": [1]},
    ],
)
def test_unreadable_progress_records_are_ignored(record: object) -> None:
    storage = StatusProgress(field="status.kopf")
    meta = {"uid": "u", "name": "orders", "namespace": "shop"}
    body = kopf.Body({"metadata": meta, "status": {"kopf": {"reconcile": record}}})
    assert storage.fetch(key="reconcile", body=body) is None  # type: ignore[arg-type]


def test_readable_progress_records_are_kept() -> None:
    storage = StatusProgress(field="status.kopf")
    record = {
        "started": "2026-01-01T00:00:00.123456+00:00",
        "delayed": "2026-01-01T00:00:05+00:00",
        "retries": 2,
        "success": False,
        "failure": False,
        "message": "retrying",
        "subrefs": ["reconcile/sub"],
    }
    body = kopf.Body({"metadata": {"uid": "u"}, "status": {"kopf": {"reconcile": record}}})
    assert storage.fetch(key="reconcile", body=body) == record  # type: ignore[arg-type]


def test_unreadable_progress_record_is_ignored_and_the_resource_handled(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    start_operator()
    hooks.create("progress", {"url": URL})
    hooks.wait_ready("progress")
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "progress", {"status": {"kopf": {"reconcile": [1]}}}
    )
    hooks.patch("progress", {"spec": {"url": EDITED}})
    wait_for(
        lambda: hooks.status("progress").get("observedGeneration") == 2,
        timeout=15,
        message="progress handled at generation 2",
    )
    _deletion_completes(hooks, "progress")
