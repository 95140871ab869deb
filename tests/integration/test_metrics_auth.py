"""/metrics behind a bearer token, with real ServiceAccount tokens on the real API server.

The operator runs as its ServiceAccount bound by the shipped RBAC (which now grants
TokenReview and SubjectAccessReview); a scraper's ServiceAccount is bound to the shipped
``blooio-operator-metrics-reader`` ClusterRole (deploy/monitoring/metrics-reader.yaml).
Allowed: 200 with the metrics. A token of a ServiceAccount without that role: 403. No
token, or one the API server does not know: 401. The probes stay open. Both serving
paths: the plain process (kopf's) and the leader-elected one (ours, a standby first).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, token_for
from tests.integration.test_metrics import free_port

pytestmark = pytest.mark.integration
READER = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "metrics-reader.yaml"


@pytest.fixture
def scraper_token(kube_api: k8s.ApiClient, namespace: str) -> Iterator[str]:
    """A token of ServiceAccount NS/scraper, bound to the shipped metrics-reader role."""
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    (role,) = [d for d in yaml.safe_load_all(READER.read_text()) if d["kind"] == "ClusterRole"]
    name = f"{role['metadata']['name']}-{namespace}"
    role["metadata"]["name"] = name
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": namespace}],
        }
    )
    yield token_for(kube_api, namespace, "scraper")
    rbac.delete_cluster_role_binding(name)
    rbac.delete_cluster_role(name)


def get(port: int, path: str = "/metrics", token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)


def probe(port: int, path: str) -> int | None:
    try:
        return get(port, path).status_code
    except httpx.TransportError:
        return None


def check_access(port: int, health: int, scraper: str, stranger: str) -> None:
    # The operator is up and the binding has reached the API server's authorizer.
    allowed = wait_for(
        lambda: ((r := get(port, token=scraper)).status_code == 200 and r) or None,
        timeout=60,
        interval=0.5,
        message="/metrics answers the scraper",
    )
    assert "blooio_operator_leader" in allowed.text
    denied = get(port, token=stranger)
    assert denied.status_code == 403, denied.text
    assert "blooio_operator" not in denied.text
    assert "may not get /metrics" in denied.text
    basic = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Basic dXNlcjpwdw=="}
    )
    for r in (get(port), get(port, token="not-a-token"), basic):
        assert r.status_code == 401, (r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "blooio_operator" not in r.text
    # The probes stay open (kopf's liveness endpoint may come up after /metrics).
    wait_for(lambda: probe(health, "/healthz") == 200, timeout=30, message="/healthz open")


def test_plain_process_metrics_need_an_allowed_token(
    kube_api: k8s.ApiClient, namespace: str, scraper_token: str, start_operator: OperatorFactory
) -> None:
    port, health = free_port(), free_port()
    op = start_operator(
        BLOOIO_METRICS_AUTH="true",
        BLOOIO_METRICS_PORT=str(port),
        args=["--health-port", str(health)],
    )
    stranger = token_for(kube_api, namespace, "stranger")
    check_access(port, health, scraper_token, stranger)
    log = op.logs()
    for token in (scraper_token, stranger):
        assert token not in log


def test_leader_elected_metrics_need_an_allowed_token(
    kube_api: k8s.ApiClient, namespace: str, scraper_token: str, start_operator: OperatorFactory
) -> None:
    port, health = free_port(), free_port()
    lease = f"metrics-auth-{uuid.uuid4().hex[:8]}"
    op = start_operator(
        BLOOIO_METRICS_AUTH="true",
        BLOOIO_METRICS_PORT=str(port),
        BLOOIO_LEADER_ELECT="true",
        BLOOIO_LEADER_ELECTION_NAMESPACE="blooio-system",
        BLOOIO_LEADER_ELECTION_LEASE_NAME=lease,
        args=["--health-port", str(health)],
    )
    stranger = token_for(kube_api, namespace, "stranger")
    check_access(port, health, scraper_token, stranger)
    wait_for(
        lambda: "blooio_operator_leader 1.0" in get(port, token=scraper_token).text,
        timeout=60,
        message="leading",
    )
    assert get(health, "/leader").status_code == 200
    op.stop()
    try:
        k8s.CoordinationV1Api(kube_api).delete_namespaced_lease(lease, "blooio-system")
    except k8s.ApiException:
        pass
