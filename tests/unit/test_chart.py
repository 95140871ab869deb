"""The Helm chart's files without helm: generated from deploy/ and the settings, a schema
that refuses what it does not know, and the tenants' ClusterRoles.

tests/integration/test_chart.py runs helm itself (lint, template, the drift test against
kustomize, server-side dry runs, the tenants' RBAC on a real API server).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from blooio_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "chart" / "blooio-operator"
TENANT_RBAC = ROOT / "deploy" / "manifests" / "tenant-rbac.yaml"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_generate", ROOT / "hack/chart/generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_generate"] = module
    spec.loader.exec_module(module)
    return module


def values() -> dict[str, Any]:
    v: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return v


def schema() -> dict[str, Any]:
    s: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return s


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_generated_files_are_up_to_date() -> None:
    """`make chart` was run after the last change of deploy/ or operator/settings.py."""
    files = generator().generate()
    stale = sorted(str(p.relative_to(ROOT)) for p, text in files.items() if p.read_text() != text)
    assert stale == [], "run `make chart`"
    on_disk = set((CHART / "templates").glob("gen-*.yaml"))
    assert on_disk == {p for p in files if p.name.startswith("gen-")}


def test_chart_version_and_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.2.0"
    # deploy/ ships the same image tag as the chart's appVersion.
    kustomization = yaml.safe_load((ROOT / "deploy/manifests/kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert image["newTag"] == chart["appVersion"]


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for name, child in node.get("properties", {}).items():
            out += walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            out += walk(node["items"], f"{path}[]")
    return out


def test_schema_is_closed_everywhere() -> None:
    """Every object with named properties refuses any other key."""
    open_nodes = [
        path
        for path, node in walk(schema())
        if "properties" in node and node.get("additionalProperties") is not False
    ]
    assert open_nodes == []


def test_every_operator_setting_is_a_typed_described_value() -> None:
    gen = generator()
    s = schema()["properties"]
    v = values()
    covered = set()
    for setting in gen.settings():
        covered.add(setting.name)
        node = s[setting.group]["properties"][setting.key]
        assert node["type"] in ("string", "number", "integer", "boolean"), setting.name
        assert node["description"], setting.name
        field = Settings.model_fields[setting.name]
        expected = gen.CHART_DEFAULTS.get(setting.name, field.default)
        assert v[setting.group][setting.key] == ("" if expected is None else expected)
    # Not values of their own: secrets (from Secrets), testing only, and those the chart
    # sets through its own values and args (metrics.port, watch.selector, leaderElection).
    assert set(Settings.model_fields) - covered == gen.NOT_VALUES


def test_defaults_validate_and_bad_values_do_not() -> None:
    s = schema()
    jsonschema.validate(values(), s)
    for bad in (
        {**values(), "replica": 2},  # a typo: unknown key
        {**values(), "replicas": "two"},
        {**values(), "config": {**values()["config"], "logFormat": "xml"}},
        {**values(), "config": {**values()["config"], "maxWorkers": 0}},
        {**values(), "image": {**values()["image"], "pullpolicy": "Always"}},
        {**values(), "watch": {"namespaces": ["team-*"], "selector": ""}},  # no globs
        {**values(), "crds": {"install": "yes", "keep": True}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, s)


def rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in doc["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_tenant_roles_grant_blooiowebhooks_only() -> None:
    roles = {d["metadata"]["name"]: d for d in yaml.safe_load_all(TENANT_RBAC.read_text()) if d}
    assert set(roles) == {"blooio-operator-view", "blooio-operator-edit"}
    view, edit = roles["blooio-operator-view"], roles["blooio-operator-edit"]
    assert rules(view) == {("blooio.com", "blooiowebhooks", v) for v in ("get", "list", "watch")}
    writes = ("create", "update", "patch", "delete", "deletecollection")
    assert rules(edit) == {
        ("blooio.com", "blooiowebhooks", v) for v in ("get", "list", "watch", *writes)
    }
    for role in roles.values():
        for _, resource, verb in rules(role):
            assert "/" not in resource  # never blooiowebhooks/status or /finalizers
            assert "*" not in (resource, verb)
    # Reading is aggregated to view (and to edit and admin, which include view's rights)
    # by default; writing to edit/admin only once labelled (the chart's values).
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in view["metadata"]["labels"] if k.startswith(aggregate)} == {
        aggregate + t for t in ("view", "edit", "admin")
    }
    assert not {k for k in edit["metadata"]["labels"] if k.startswith(aggregate)}
    v = values()["rbac"]
    assert (v["aggregateToView"], v["aggregateToEdit"], v["aggregateToAdmin"]) == (
        True,
        False,
        False,
    )


def test_crds_are_kept_by_default() -> None:
    assert values()["crds"] == {"install": True, "keep": True}
    text = (CHART / "templates" / "gen-crd.yaml").read_text()
    assert "helm.sh/resource-policy: keep" in text
