"""The reusable OpenAPI conformance helpers (``blooio_operator.simulator.openapi``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from blooio_operator.simulator.openapi import (
    OpenApiViolation,
    load_openapi,
    resolve_path_template,
    validate_request,
    validate_response,
)

SPEC_PATH = Path(__file__).parents[2].parent / "shared/reference/blooio-v4-webhooks.openapi.json"
WEBHOOK = {
    "id": "wh_1",
    "url": "https://hooks.example.com/",
    "event_types": ["*"],
    "status": "active",
    "channel_id": None,
    "channel_type": None,
    "created_at": 1,
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    path = Path(os.environ.get("BLOOIO_OPENAPI_FILE") or SPEC_PATH)
    if not path.is_file():
        pytest.skip(f"provider OpenAPI file not found at {path} (set BLOOIO_OPENAPI_FILE)")
    loaded = load_openapi(path)
    assert loaded is not None
    return loaded


def test_load_openapi_honours_the_environment(
    spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BLOOIO_OPENAPI_FILE", str(tmp_path / "absent.json"))
    from_env_or_repo = load_openapi()
    # An absent override falls back to the repository's sibling shared/ directory.
    assert from_env_or_repo is None or from_env_or_repo["openapi"] == spec["openapi"]
    assert load_openapi(tmp_path / "absent.json") is None
    copy = tmp_path / "copy.json"
    copy.write_text('{"openapi": "3.1.0", "paths": {}}')
    monkeypatch.setenv("BLOOIO_OPENAPI_FILE", str(copy))
    assert load_openapi() == {"openapi": "3.1.0", "paths": {}}


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/webhooks", "/webhooks"),
        ("/v4/webhooks", "/webhooks"),
        ("https://api.blooio.com/v4/webhooks?limit=5", "/webhooks"),
        ("/webhooks/{id}", "/webhooks/{webhookId}"),
        ("/v4/webhooks/wh_abc", "/webhooks/{webhookId}"),
        ("/webhooks/wh_abc/secret/rotate", "/webhooks/{webhookId}/secret/rotate"),
        ("/webhooks/wh_abc/logs", "/webhooks/{webhookId}/deliveries"),
        (
            "/webhooks/{id}/logs/{delivery_id}/replay",
            "/webhooks/{webhookId}/deliveries/{deliveryId}/replay",
        ),
    ],
)
def test_paths_resolve_to_templates(spec: dict[str, Any], path: str, template: str) -> None:
    assert resolve_path_template(spec, path) == template


def test_unknown_path_or_method_is_a_violation(spec: dict[str, Any]) -> None:
    with pytest.raises(OpenApiViolation, match="no path"):
        resolve_path_template(spec, "/webhooks/wh_1/test")
    with pytest.raises(OpenApiViolation, match="not an operation"):
        validate_response(spec, "PUT", "/webhooks", 200, {})


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/webhooks/wh_1", 200, {"data": {**WEBHOOK, "status": "paused"}}),
        ("GET", "/webhooks/wh_1", 200, {"data": {**WEBHOOK, "created_at": "yesterday"}}),
        ("GET", "/webhooks", 200, {"data": [WEBHOOK], "has_more": "no", "next_cursor": None}),
        ("POST", "/webhooks", 201, {"data": {**WEBHOOK, "url": "not a uri"}}),
        ("DELETE", "/webhooks/wh_1", 200, {"data": {"id": "wh_1", "deleted": "yes"}}),
        ("GET", "/webhooks/wh_1", 404, {"error": "not found"}),
        ("GET", "/webhooks/wh_1", 404, {"error": {"message": "no code"}}),
        ("GET", "/webhooks", 401, {"error": {"code": "x", "message": "nested"}}),
        ("GET", "/webhooks", 204, None),
    ],
)
def test_response_violations(
    spec: dict[str, Any], method: str, path: str, status: int, body: Any
) -> None:
    with pytest.raises(OpenApiViolation):
        validate_response(spec, method, path, status, body)


def test_strict_response_requires_every_declared_property(spec: dict[str, Any]) -> None:
    partial = {k: v for k, v in WEBHOOK.items() if k != "channel_id"}
    validate_response(spec, "GET", "/webhooks/wh_1", 200, {"data": partial})
    with pytest.raises(OpenApiViolation, match="channel_id"):
        validate_response(spec, "GET", "/webhooks/wh_1", 200, {"data": partial}, strict=True)


def test_undeclared_error_statuses(spec: dict[str, Any]) -> None:
    error = {"error": {"code": "rate_limited", "message": "slow down", "details": {}}}
    validate_response(spec, "GET", "/webhooks", 429, error)
    with pytest.raises(OpenApiViolation, match="not declared"):
        validate_response(spec, "GET", "/webhooks", 429, error, allow_undeclared_errors=False)
    validate_response(spec, "GET", "/webhooks", 403, {"error": "Forbidden", "message": "m"})


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "strict"),
    [
        ("POST", "/webhooks", None, None, False),
        ("POST", "/webhooks", {"event_types": ["*"]}, None, False),
        ("POST", "/webhooks", {"url": "https://a.example/", "event_types": "*"}, None, False),
        ("POST", "/webhooks", {"url": "https://a.example/", "channel_id": None}, None, False),
        (
            "POST",
            "/webhooks",
            {"webhook_url": "https://a.example/", "url": "https://a/"},
            None,
            True,
        ),
        ("PATCH", "/webhooks/wh_1", {"status": "paused"}, None, False),
        ("PATCH", "/webhooks/wh_1", {"channel_id": "ch_1"}, None, True),
        ("PATCH", "/webhooks/wh_1", None, None, False),
        ("POST", "/webhooks/wh_1/secret/rotate", {}, None, False),
        ("DELETE", "/webhooks/wh_1", {}, None, False),
        ("GET", "/webhooks", None, {"limit": "500"}, False),
        ("GET", "/webhooks", None, {"limit": "ten"}, False),
        ("GET", "/webhooks", None, {"offset": "10"}, False),
        ("GET", "/webhooks/wh_1/deliveries", None, {"limit": "0"}, False),
    ],
)
def test_request_violations(
    spec: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    query: dict[str, str] | None,
    strict: bool,
) -> None:
    with pytest.raises(OpenApiViolation):
        validate_request(spec, method, path, body, query=query, strict=strict)


@pytest.mark.parametrize(
    ("method", "path", "body", "query"),
    [
        ("POST", "/webhooks", {"url": "https://a.example/"}, None),
        (
            "POST",
            "/webhooks",
            {
                "url": "https://a.example/",
                "event_types": ["message.*"],
                "channel_id": "ch_1",
                "channel_type": "whatsapp_business",
            },
            None,
        ),
        ("PATCH", "/webhooks/wh_1", {"status": "disabled"}, None),
        ("PATCH", "/webhooks/wh_1", {}, None),
        ("POST", "/webhooks/wh_1/secret/rotate", None, None),
        ("GET", "/webhooks", None, {"limit": "200", "cursor": "abc"}),
        ("GET", "/v4/webhooks/wh_1/logs", None, {"limit": "1"}),
    ],
)
def test_conforming_requests(
    spec: dict[str, Any], method: str, path: str, body: Any, query: dict[str, str] | None
) -> None:
    validate_request(spec, method, path, body, query=query, strict=True)
