"""Conformance checks against the provider's OpenAPI file (Blooio V4 webhooks subset).

Owns locating and loading ``blooio-v4-webhooks.openapi.json`` and two reusable checks:
:func:`validate_response` (does a response match the declared schema for its status?)
and :func:`validate_request` (does a request body / query match the operation?). Both
raise :class:`OpenApiViolation` with a readable message. The simulator's own tests use
them for responses; the client's tests use them for requests. ``$ref`` s are resolved
against the whole document through a ``referencing`` registry.

Paths may be given as OpenAPI templates (``/webhooks/{webhookId}``), as the simulator's
endpoint templates (``/webhooks/{id}``), with the ``/logs`` alias, with a ``/v4``
prefix, or as concrete paths (``/v4/webhooks/wh_123/secret/rotate``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

# jsonschema ships no type information and types-jsonschema is not a dependency.
from jsonschema import FormatChecker  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_FILENAME: Final = "blooio-v4-webhooks.openapi.json"
SPEC_ENV_VAR: Final = "BLOOIO_OPENAPI_FILE"
_SPEC_URI: Final = "urn:blooio:v4-openapi"
_HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


class OpenApiViolation(AssertionError):
    """A request or response does not conform to the OpenAPI document."""


def candidate_paths() -> list[Path]:
    """Where :func:`load_openapi` looks, in order (``$BLOOIO_OPENAPI_FILE`` first)."""
    candidates: list[Path] = []
    env = os.environ.get(SPEC_ENV_VAR)
    if env:
        candidates.append(Path(env))
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "reference" / SPEC_FILENAME)
    candidates.append(repo_root / "shared" / "reference" / SPEC_FILENAME)
    return candidates


def find_openapi_file() -> Path | None:
    """The first existing candidate file, or ``None``."""
    return next((p for p in candidate_paths() if p.is_file()), None)


def load_openapi(path: str | Path | None = None) -> dict[str, Any] | None:
    """Load the OpenAPI document; ``None`` when no file is found."""
    location = Path(path) if path is not None else find_openapi_file()
    if location is None or not location.is_file():
        return None
    spec: dict[str, Any] = json.loads(location.read_text(encoding="utf-8"))
    return spec


# --- path and $ref resolution -------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _resolve_local(spec: Mapping[str, Any], node: Any) -> Any:
    """Follow ``{"$ref": "#/..."}`` chains inside the document."""
    seen: set[str] = set()
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise OpenApiViolation(f"cannot resolve $ref {ref!r}")
        seen.add(ref)
        target: Any = spec
        for raw in ref[2:].split("/"):
            key = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or key not in target:
                raise OpenApiViolation(f"dangling $ref {ref!r}")
            target = target[key]
        node = target
    return node


def _normalize_path(path: str) -> list[str]:
    path = urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    segments = [s for s in path.split("/") if s]
    if segments[:1] == ["v4"]:
        segments = segments[1:]
    # The documented alias /webhooks/{id}/logs[/...] is the same operation as /deliveries.
    if len(segments) >= 3 and segments[0] == "webhooks" and segments[2] == "logs":
        segments[2] = "deliveries"
    return segments


def resolve_path_template(spec: Mapping[str, Any], path: str) -> str:
    """The document's path template for ``path`` (a template, an alias, or a real path)."""
    paths: Mapping[str, Any] = spec.get("paths", {})
    segments = _normalize_path(path)
    best: tuple[int, str] | None = None
    for template in paths:
        t_segments = [s for s in template.split("/") if s]
        if len(t_segments) != len(segments):
            continue
        literal_matches = 0
        for want, got in zip(t_segments, segments, strict=True):
            if want.startswith("{") and want.endswith("}"):
                continue
            if want != got:
                break
            literal_matches += 1
        else:
            if best is None or literal_matches > best[0]:
                best = (literal_matches, template)
    if best is None:
        raise OpenApiViolation(f"no path in the OpenAPI document matches {path!r}")
    return best[1]


def _operation(spec: Mapping[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    template = resolve_path_template(spec, path)
    item = spec["paths"][template]
    operation = item.get(method.lower())
    if method.lower() not in _HTTP_METHODS or not isinstance(operation, dict):
        raise OpenApiViolation(f"{method.upper()} {template} is not an operation of the API")
    return template, operation


# --- schema validation --------------------------------------------------------------------


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(urlsplit(value).scheme) and not any(ch.isspace() for ch in value)


@cache
def _format_checker() -> Any:
    """OAS 3.1 format checks plus ``uri`` (jsonschema checks it only with rfc3987)."""
    checker = FormatChecker()
    checker.checkers.update(OAS31Validator.FORMAT_CHECKER.checkers)
    checker.checkers["uri"] = (_is_uri, ())
    return checker


@cache
def _registry_for(spec_json: str) -> Registry[Any]:
    contents = json.loads(spec_json)
    resource: Resource[Any] = Resource.from_contents(contents, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
    return registry


def _validate_schema_at(spec: Mapping[str, Any], pointer: str, instance: Any, what: str) -> None:
    registry = _registry_for(json.dumps(spec, sort_keys=True))
    ref = _SPEC_URI + "#" + quote(pointer, safe="/~")
    validator = OAS31Validator({"$ref": ref}, registry=registry, format_checker=_format_checker())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise OpenApiViolation(f"{what}: " + "; ".join(_describe(e) for e in errors[:5]))


def _describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"at {where}: {error.message}"


def _object_view(spec: Mapping[str, Any], schema: Any) -> tuple[dict[str, Any], set[str], bool]:
    """Declared properties (merged over allOf), all of their names, and extras allowed?"""
    schema = _resolve_local(spec, schema)
    properties: dict[str, Any] = {}
    extras_allowed = False
    if not isinstance(schema, Mapping):
        return properties, set(), True
    for part in schema.get("allOf", []):
        sub_props, _, sub_extras = _object_view(spec, part)
        properties.update(sub_props)
        extras_allowed = extras_allowed or sub_extras
    properties.update(schema.get("properties", {}))
    additional = schema.get("additionalProperties")
    if additional is True or isinstance(additional, Mapping):
        extras_allowed = True
    if not properties and "allOf" not in schema:
        extras_allowed = True  # a free-form object
    return properties, set(properties), extras_allowed


def _strict_errors(
    spec: Mapping[str, Any], schema: Any, instance: Any, where: str, require_all: bool
) -> Iterator[str]:
    schema = _resolve_local(spec, schema)
    if not isinstance(schema, Mapping):
        return
    if isinstance(instance, dict):
        properties, names, extras_allowed = _object_view(spec, schema)
        if not names:
            return
        if require_all:
            for missing in sorted(names - set(instance)):
                yield f"at {where or '<root>'}: missing declared property {missing!r}"
        if not extras_allowed:
            for extra in sorted(set(instance) - names):
                yield f"at {where or '<root>'}: undeclared property {extra!r}"
        for name, sub in properties.items():
            if name in instance:
                yield from _strict_errors(
                    spec, sub, instance[name], f"{where}/{name}".lstrip("/"), require_all
                )
    elif isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            yield from _strict_errors(
                spec, schema["items"], item, f"{where}/{index}".lstrip("/"), require_all
            )


def _json_schema_of(spec: Mapping[str, Any], container: Any) -> tuple[Any, str] | None:
    """The ``application/json`` schema of a response/requestBody and its JSON pointer."""
    content = container.get("content") if isinstance(container, Mapping) else None
    if not isinstance(content, Mapping):
        return None
    media = content.get("application/json")
    if not isinstance(media, Mapping) or "schema" not in media:
        return None
    return media["schema"], "application/json"


def validate_response(
    spec: Mapping[str, Any],
    method: str,
    path_template: str,
    status: int,
    body: Any,
    *,
    strict: bool = False,
    allow_undeclared_errors: bool = True,
) -> None:
    """Check a response body against the schema declared for ``status``.

    Undeclared 4xx/5xx statuses are checked against the generic ``Error`` envelope
    (``AuthError`` for 401/403) when ``allow_undeclared_errors`` is true, and are a
    violation otherwise; an undeclared 2xx/3xx is always a violation. With ``strict``,
    every object must carry exactly its declared properties (free-form objects exempt),
    which the schemas themselves do not demand (they declare nothing as required).
    """
    template, operation = _operation(spec, method, path_template)
    label = f"{method.upper()} {template} -> {status}"
    responses: Mapping[str, Any] = operation.get("responses", {})
    key = next((k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None)
    if key is not None:
        response = _resolve_local(spec, responses[key])
        ref = responses[key].get("$ref") if isinstance(responses[key], Mapping) else None
        if isinstance(ref, str):
            base = ref[1:]
        else:
            base = _pointer("paths", template, method.lower(), "responses", key)
    elif status >= 400 and allow_undeclared_errors:
        name = "AuthError" if status in (401, 403) else "Error"
        response = {
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        }
        base = ""
    else:
        declared = ", ".join(responses) or "none"
        raise OpenApiViolation(f"{label}: status not declared (declared: {declared})")
    found = _json_schema_of(spec, response)
    if found is None:
        if body not in (None, b"", ""):
            raise OpenApiViolation(f"{label}: no JSON body is declared but one was returned")
        return
    schema, _ = found
    if base:
        pointer = base + _pointer("content", "application/json", "schema")
    else:
        pointer = schema["$ref"][1:]
    _validate_schema_at(spec, pointer, body, label)
    if strict:
        problems = list(_strict_errors(spec, schema, body, "", require_all=True))
        if problems:
            raise OpenApiViolation(f"{label} (strict): " + "; ".join(problems[:5]))


def _query_value(raw: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def validate_request(
    spec: Mapping[str, Any],
    method: str,
    path_template: str,
    body: Any,
    *,
    query: Mapping[str, str] | None = None,
    strict: bool = False,
) -> None:
    """Check a request body (decoded JSON, or ``None`` for no body) and query parameters.

    Operations without a ``requestBody`` must be sent without one; a required body must
    be present. Query parameters must be declared and match their schemas. With
    ``strict``, body objects may not carry properties the schema does not declare (the
    schemas allow them, but an undeclared field is almost always a client bug).
    """
    template, operation = _operation(spec, method, path_template)
    label = f"{method.upper()} {template} request"
    request_body = operation.get("requestBody")
    if request_body is None:
        if body is not None:
            raise OpenApiViolation(f"{label}: the operation takes no request body")
    else:
        resolved = _resolve_local(spec, request_body)
        if body is None:
            if resolved.get("required"):
                raise OpenApiViolation(f"{label}: a request body is required")
        else:
            found = _json_schema_of(spec, resolved)
            if found is None:
                raise OpenApiViolation(f"{label}: no application/json request body declared")
            schema, _ = found
            if isinstance(request_body.get("$ref"), str):
                pointer = request_body["$ref"][1:]
            else:
                pointer = _pointer("paths", template, method.lower(), "requestBody")
            _validate_schema_at(
                spec, pointer + _pointer("content", "application/json", "schema"), body, label
            )
            if strict:
                problems = list(_strict_errors(spec, schema, body, "", require_all=False))
                if problems:
                    raise OpenApiViolation(f"{label} (strict): " + "; ".join(problems[:5]))
    if query:
        declared: dict[str, Mapping[str, Any]] = {}
        item = spec["paths"][template]
        for param in [*item.get("parameters", []), *operation.get("parameters", [])]:
            resolved_param = _resolve_local(spec, param)
            if resolved_param.get("in") == "query":
                declared[resolved_param["name"]] = resolved_param
        for name, raw in query.items():
            param = declared.get(name)
            if param is None:
                raise OpenApiViolation(f"{label}: undeclared query parameter {name!r}")
            param_schema = _resolve_local(spec, param.get("schema", {}))
            value = _query_value(raw, param_schema)
            validator = OAS31Validator(param_schema, format_checker=_format_checker())
            errors = list(validator.iter_errors(value))
            if errors:
                raise OpenApiViolation(
                    f"{label}: query parameter {name}={raw!r}: {errors[0].message}"
                )
