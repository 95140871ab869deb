"""In-memory fakes of the reconcile layer's collaborators, for fast unit tests.

* ``FakeBlooio`` — the ``BlooioClient`` methods the reconcile layer uses, over an
  in-memory webhook store; records every call and can be told to fail the next call to a
  method (optionally *after* committing it, like a create whose response was lost).
* ``FakeKube`` — the ``KubeClient`` methods used: Secrets, the BlooioWebhook object and
  its status (JSON merge patches applied as the API server applies them); records writes.
* ``FakeEvents`` — an ``EventSink`` keeping ``(type, reason, message)``.
* ``FakePool`` — ``ClientPool.get(api_key)`` returning a ``FakeBlooio``.
* ``CrashAt`` — a crash point that raises ``SimulatedCrash`` instead of SIGKILL, so a test
  can "restart" by building a new context from what was persisted.
* ``World`` — all of the above wired into ``Deps``, with helpers that build a
  ``WebhookContext`` from the stored object the way the kopf handlers do.

Blooio calls and Kubernetes writes also go, in order, to one shared ``journal`` so tests
can assert on ordering across the two (e.g. "Secret written before status").
"""

from __future__ import annotations

import copy
import itertools
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from blooio_operator.blooio import (
    CreateOutcomeUnknown,
    CreateWebhookRequest,
    NotFound,
    RotatedSecret,
    UpdateWebhookRequest,
    Webhook,
    WebhookWithSecret,
)
from blooio_operator.kube import KubeConflict, KubeNotFound, OwnerRef
from blooio_operator.kube.client import SecretView
from blooio_operator.metrics import Metrics
from blooio_operator.models import reasons
from blooio_operator.reconcile import lifecycle
from blooio_operator.reconcile.context import Deps, WebhookContext
from blooio_operator.reconcile.crash import CrashPoints
from blooio_operator.reconcile.errors import TransientFailure
from blooio_operator.reconcile.snapshots import SnapshotCache
from blooio_operator.settings import Settings

API_KEY = "bk_test_default_key_0123456789abcdef"
NAMESPACE = "shop"
NAME = "orders"
UID = "uid-orders-0001"
URL = "https://orders.shop.example.com/blooio"
EVENT_TYPES = ["message.received", "poll.*"]


def default_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": URL, "eventTypes": list(EVENT_TYPES)}
    spec.update(overrides)
    return spec


# --- journal ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One Blooio call or Kubernetes write, in global order."""

    source: str  # "blooio" or "kube"
    op: str
    target: str = ""
    detail: Any = None


class Journal(list[Entry]):
    def ops(self, source: str | None = None) -> list[str]:
        return [e.op for e in self if source is None or e.source == source]

    def find(self, predicate: Callable[[Entry], bool], start: int = 0) -> int:
        """Index of the first entry at or after ``start`` matching ``predicate``."""
        for i, entry in enumerate(self):
            if i >= start and predicate(entry):
                return i
        raise AssertionError(f"no journal entry matches; journal: {list(self)!r}")


# --- Blooio -------------------------------------------------------------------------


@dataclass
class RemoteHook:
    id: str
    url: str
    event_types: list[str]
    status: str = "active"
    channel_id: str | None = None
    channel_type: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time() * 1000))
    secret: str = ""

    def model(self) -> Webhook:
        return Webhook(
            id=self.id,
            url=self.url,
            event_types=list(self.event_types),
            status=self.status,
            channel_id=self.channel_id,
            channel_type=self.channel_type,
            created_at=self.created_at,
        )


@dataclass(frozen=True)
class Call:
    method: str
    webhook_id: str | None = None
    request: CreateWebhookRequest | UpdateWebhookRequest | None = None

    @property
    def wire(self) -> dict[str, object]:
        assert self.request is not None
        return self.request.to_wire()


@dataclass
class _Failure:
    exc: BaseException
    commit: bool


class FakeBlooio:
    """The subset of ``BlooioClient`` the reconcile layer uses, in memory."""

    def __init__(self, journal: Journal | None = None, *, name: str = "default") -> None:
        self.name = name
        self.journal = journal if journal is not None else Journal()
        self.hooks: dict[str, RemoteHook] = {}
        self.calls: list[Call] = []
        self.issued_secrets: list[str] = []
        self._failures: defaultdict[str, list[_Failure]] = defaultdict(list)
        self._ids = itertools.count(1)

    # -- programming the fake ---------------------------------------------------------

    def fail_next(self, method: str, exc: BaseException, *, commit: bool = False) -> None:
        """Raise ``exc`` on the next call to ``method``; with ``commit``, after doing it."""
        assert hasattr(self, method), method
        self._failures[method].append(_Failure(exc, commit))

    def commit_then_fail(
        self, method: str = "create_webhook", exc: BaseException | None = None
    ) -> None:
        """The call takes effect at Blooio, but the caller sees ``exc`` (lost response)."""
        self.fail_next(
            method,
            exc
            or CreateOutcomeUnknown("read timeout after sending", method="POST", path="/webhooks"),
            commit=True,
        )

    def seed(self, **fields: Any) -> RemoteHook:
        """A webhook that exists at Blooio without the operator having created it."""
        fields.setdefault("url", URL)
        fields.setdefault("event_types", list(EVENT_TYPES))
        hook = RemoteHook(id=self._new_id(), secret=self._new_secret(), **fields)
        self.hooks[hook.id] = hook
        return hook

    # -- inspecting -------------------------------------------------------------------

    def count(self, method: str | None = None) -> int:
        return len(self.calls_to(method))

    def calls_to(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if method is None or c.method == method]

    def reset_calls(self) -> None:
        self.calls.clear()

    def secret_of(self, webhook_id: str) -> str:
        return self.hooks[webhook_id].secret

    # -- the client surface -----------------------------------------------------------

    async def list_webhooks(self) -> list[Webhook]:
        self._record(Call("list_webhooks"))
        failure = self._take("list_webhooks")
        if failure and not failure.commit:
            raise failure.exc
        result = [h.model() for h in self.hooks.values()]
        if failure:
            raise failure.exc
        return result

    async def create_webhook(self, request: CreateWebhookRequest) -> WebhookWithSecret:
        self._record(Call("create_webhook", None, request))
        failure = self._take("create_webhook")
        if failure and not failure.commit:
            raise failure.exc
        hook = RemoteHook(
            id=self._new_id(),
            url=request.url,
            event_types=list(request.event_types or ["*"]),
            channel_id=request.channel_id,
            channel_type=request.channel_type,
            secret=self._new_secret(),
        )
        self.hooks[hook.id] = hook
        if failure:
            raise failure.exc
        return WebhookWithSecret(**hook.model().model_dump(), signing_secret=SecretStr(hook.secret))

    async def get_webhook(self, webhook_id: str) -> Webhook:
        self._record(Call("get_webhook", webhook_id))
        failure = self._take("get_webhook")
        if failure and not failure.commit:
            raise failure.exc
        hook = self._find(webhook_id)
        if failure:
            raise failure.exc
        return hook.model()

    async def update_webhook(self, webhook_id: str, request: UpdateWebhookRequest) -> Webhook:
        self._record(Call("update_webhook", webhook_id, request))
        failure = self._take("update_webhook")
        if failure and not failure.commit:
            raise failure.exc
        hook = self._find(webhook_id)
        if request.url is not None:
            hook.url = request.url
        if request.event_types is not None:
            hook.event_types = list(request.event_types)
        if request.status is not None:
            hook.status = request.status
        if failure:
            raise failure.exc
        return hook.model()

    async def delete_webhook(self, webhook_id: str) -> None:
        self._record(Call("delete_webhook", webhook_id))
        failure = self._take("delete_webhook")
        if failure and not failure.commit:
            raise failure.exc
        self._find(webhook_id)
        del self.hooks[webhook_id]
        if failure:
            raise failure.exc

    async def rotate_secret(self, webhook_id: str) -> RotatedSecret:
        self._record(Call("rotate_secret", webhook_id))
        failure = self._take("rotate_secret")
        if failure and not failure.commit:
            raise failure.exc
        hook = self._find(webhook_id)
        hook.secret = self._new_secret()
        if failure:
            raise failure.exc
        return RotatedSecret(id=hook.id, signing_secret=SecretStr(hook.secret))

    # -- internals ----------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self.journal.append(Entry("blooio", call.method, call.webhook_id or "", call.request))

    def _take(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        return queue.pop(0) if queue else None

    def _find(self, webhook_id: str) -> RemoteHook:
        hook = self.hooks.get(webhook_id)
        if hook is None:
            raise NotFound(
                code="not_found",
                message=f"Webhook {webhook_id} not found",
                method="GET",
                path=f"/webhooks/{webhook_id}",
            )
        return hook

    def _new_id(self) -> str:
        return f"wh_{self.name}{next(self._ids):04d}"

    def _new_secret(self) -> str:
        value = f"whsec_{secrets.token_hex(16)}"
        self.issued_secrets.append(value)
        return value


class FakePool:
    """``ClientPool.get``: the fake for a key (``by_key``), else the default one."""

    def __init__(self, default: FakeBlooio, by_key: dict[str, FakeBlooio] | None = None) -> None:
        self.default = default
        self.by_key = by_key or {}
        self.keys: list[str] = []

    def get(self, api_key: SecretStr) -> FakeBlooio:
        value = api_key.get_secret_value()
        self.keys.append(value)
        return self.by_key.get(value, self.default)


# --- Kubernetes ------------------------------------------------------------------------


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies ``merge-patch+json``."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


@dataclass
class StoredSecret:
    data: dict[str, bytes]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_refs: list[dict[str, Any]] = field(default_factory=list)
    resource_version: int = 1
    finalizers: list[str] = field(default_factory=list)

    def view(self, name: str) -> SecretView:
        return SecretView(
            name=name,
            data=dict(self.data),
            owner_uids=frozenset(r["uid"] for r in self.owner_refs),
            controller_uid=next((r["uid"] for r in self.owner_refs if r.get("controller")), None),
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            resource_version=str(self.resource_version),
            finalizers=tuple(self.finalizers),
        )


class FakeKube:
    """The subset of ``KubeClient`` the reconcile layer uses, in memory."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal if journal is not None else Journal()
        self.secrets: dict[tuple[str, str], StoredSecret] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[Entry] = []
        self.status_patches: list[dict[str, Any]] = []
        self.secret_reads = 0
        self._failures: defaultdict[str, list[BaseException]] = defaultdict(list)

    # -- programming and inspecting ------------------------------------------------------

    def fail_next(self, method: str, exc: BaseException) -> None:
        assert hasattr(self, method), method
        self._failures[method].append(exc)

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        *,
        owner_uid: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """A Secret created by someone else (not recorded as an operator write)."""
        refs = [{"uid": owner_uid, "controller": True}] if owner_uid else []
        self.secrets[(namespace, name)] = StoredSecret(
            {k: v.encode() for k, v in data.items()}, dict(labels or {}), {}, refs
        )

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        stored = self.secrets.get((namespace, name))
        if stored is None:
            return None
        return {k: v.decode() for k, v in stored.data.items()}

    def status_of(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)].get("status") or {})

    def reset_writes(self) -> None:
        self.writes.clear()
        self.status_patches.clear()

    # -- the client surface ---------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        self._maybe_fail("read_secret")
        self.secret_reads += 1
        stored = self.secrets.get((namespace, name))
        return stored.view(name) if stored else None

    async def read_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        self._maybe_fail("read_secret_value")
        stored = self.secrets.get((namespace, name))
        if stored is None or key not in stored.data:
            return None
        return stored.data[key].decode().strip()

    async def write_secret(
        self,
        namespace: str,
        name: str,
        *,
        data: dict[str, str],
        labels: dict[str, str],
        annotations: dict[str, str],
        owner: OwnerRef | None,
        exists: bool,
    ) -> None:
        self._write("write_secret", name, {"data": dict(data), "exists": exists})
        self._maybe_fail("write_secret")
        key = (namespace, name)
        stored = self.secrets.get(key)
        encoded = {k: v.encode() for k, v in data.items()}
        refs = [owner.to_dict()] if owner else []
        if exists:
            if stored is None:
                raise KubeNotFound(404, "NotFound", f"patch Secret {namespace}/{name}")
            # A merge patch: data/labels/annotations merge, ownerReferences (a list) replace.
            stored.data.update(encoded)
            stored.labels.update(labels)
            stored.annotations.update(annotations)
            stored.owner_refs = refs
            stored.resource_version += 1
        else:
            if stored is not None:
                raise KubeConflict(409, "AlreadyExists", f"create Secret {namespace}/{name}")
            self.secrets[key] = StoredSecret(encoded, dict(labels), dict(annotations), refs)

    async def release_secret(self, namespace: str, name: str, owner_uid: str) -> None:
        self._maybe_fail("release_secret")
        stored = self.secrets.get((namespace, name))
        if stored is None or all(r["uid"] != owner_uid for r in stored.owner_refs):
            return
        self._write("release_secret", name, owner_uid)
        stored.owner_refs = [r for r in stored.owner_refs if r["uid"] != owner_uid]
        stored.resource_version += 1

    async def add_secret_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        self._write("add_secret_finalizer", name, finalizer)
        self._maybe_fail("add_secret_finalizer")
        stored = self.secrets.get((namespace, name))
        if stored is None:
            raise KubeNotFound(404, "NotFound", f"patch Secret {namespace}/{name}")
        if finalizer not in stored.finalizers:
            stored.finalizers.append(finalizer)
            stored.resource_version += 1

    async def remove_secret_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        self._write("remove_secret_finalizer", name, finalizer)
        self._maybe_fail("remove_secret_finalizer")
        stored = self.secrets.get((namespace, name))
        if stored is not None and finalizer in stored.finalizers:
            stored.finalizers.remove(finalizer)
            stored.resource_version += 1

    async def list_webhook_resources(
        self, namespace: str, *, credentials_name: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        self._maybe_fail("list_webhook_resources")
        found = [
            copy.deepcopy(o)
            for (ns, _), o in self.objects.items()
            if ns == namespace
            and (
                credentials_name is None
                or ((o.get("spec") or {}).get("credentialsRef") or {}).get("name")
                == credentials_name
            )
        ]
        return found[:limit] if limit is not None and credentials_name is not None else found

    async def delete_secret(self, namespace: str, name: str) -> None:
        self._write("delete_secret", name)
        self._maybe_fail("delete_secret")
        self.secrets.pop((namespace, name), None)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._write("patch_status", name, copy.deepcopy(status))
        self.status_patches.append(copy.deepcopy(status))
        self._maybe_fail("patch_status")
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise KubeNotFound(404, "NotFound", f"patch status of {namespace}/{name}")
        obj["status"] = merge_patch(obj.get("status") or {}, status)

    async def read_webhook_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail("read_webhook_resource")
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    # -- internals ------------------------------------------------------------------------

    def _write(self, op: str, target: str, detail: Any = None) -> None:
        entry = Entry("kube", op, target, detail)
        self.writes.append(entry)
        self.journal.append(entry)

    def _maybe_fail(self, method: str) -> None:
        queue = self._failures.get(method)
        if queue:
            raise queue.pop(0)


# --- Events and crashes ----------------------------------------------------------------------


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def normal(self, reason: str, message: str) -> None:
        self.events.append(("Normal", reason, message))

    def warning(self, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))

    def reasons(self, type_: str | None = None) -> list[str]:
        return [r for t, r, _ in self.events if type_ is None or t == type_]

    def of(self, reason: str) -> list[tuple[str, str, str]]:
        return [e for e in self.events if e[1] == reason]

    def clear(self) -> None:
        self.events.clear()


class SimulatedCrash(BaseException):
    """Raised at a crash point. A BaseException, so no ``except Exception`` swallows it."""


class CrashAt:
    """A ``CrashPoints`` stand-in that raises ``SimulatedCrash`` the n-th time ``point`` is hit."""

    def __init__(self, point: str, nth: int = 1) -> None:
        self.point = point
        self.remaining = nth
        self.fired = False

    def __call__(self, point: str) -> None:
        if point != self.point or self.fired:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            self.fired = True
            raise SimulatedCrash(point)


# --- wiring ------------------------------------------------------------------------------------


def make_settings(api_key: str | None = API_KEY, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_key": SecretStr(api_key) if api_key is not None else None,
        "credentials_retry_seconds": 300.0,
        "transient_retry_base_seconds": 1.0,
        "transient_retry_cap_seconds": 60.0,
        "recovery_delay_seconds": 3.0,
        "drift_interval_seconds": 600.0,
        "crash_point": None,
    }
    values.update(overrides)
    return Settings(**values)


def make_deps(
    kube: FakeKube,
    pool: FakePool,
    *,
    settings: Settings | None = None,
    snapshots: SnapshotCache | None = None,
) -> Deps:
    settings = settings or make_settings()
    return Deps(
        settings=settings,
        kube=kube,
        clients=pool,
        snapshots=snapshots or SnapshotCache(settings.drift_interval_seconds, jitter=0.0),
        metrics=Metrics(),
        crash=CrashPoints(None),
    )


def make_body(
    *,
    name: str = NAME,
    namespace: str = NAMESPACE,
    uid: str = UID,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A body shaped like the one kopf hands to handlers."""
    body: dict[str, Any] = {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": generation,
            "annotations": dict(annotations or {}),
        },
        "spec": spec if spec is not None else default_spec(),
    }
    if status is not None:
        body["status"] = status
    return body


Step = Callable[[WebhookContext], Awaitable[None]]


class World:
    """One fake cluster + one fake Blooio, wired into ``Deps``."""

    def __init__(
        self,
        *,
        api_key: str | None = API_KEY,
        settings: Settings | None = None,
        **setting_overrides: Any,
    ) -> None:
        self.journal = Journal()
        self.blooio = FakeBlooio(self.journal)
        self.kube = FakeKube(self.journal)
        self.pool = FakePool(self.blooio)
        self.events = FakeEvents()
        self.settings = settings or make_settings(api_key, **setting_overrides)
        self.deps = make_deps(self.kube, self.pool, settings=self.settings)
        self.clock_offset = 0.0
        self.deps.clock = lambda: time.time() + self.clock_offset
        self.errors: list[Exception] = []

    # -- the resource ---------------------------------------------------------------------

    def apply(
        self,
        spec: dict[str, Any] | None = None,
        *,
        annotations: dict[str, str] | None = None,
        name: str = NAME,
        namespace: str = NAMESPACE,
        uid: str | None = None,
        status: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create the resource, or update it as ``kubectl apply`` would (spec bumps generation)."""
        key = (namespace, name)
        obj = self.kube.objects.get(key)
        if obj is None:
            obj = make_body(
                name=name,
                namespace=namespace,
                uid=uid or (UID if name == NAME else f"uid-{name}"),
                annotations=annotations,
                spec=spec if spec is not None else default_spec(),
                status=status,
            )
            self.kube.objects[key] = obj
            return obj
        if spec is not None and spec != obj["spec"]:
            obj["spec"] = copy.deepcopy(spec)
            obj["metadata"]["generation"] += 1
        if annotations is not None:
            obj["metadata"]["annotations"] = dict(annotations)
        if status is not None:
            obj["status"] = status
        return obj

    def edit_spec(self, name: str = NAME, **changes: Any) -> None:
        """Change spec fields (``None`` removes one), bumping the generation."""
        spec = copy.deepcopy(self.kube.objects[(NAMESPACE, name)]["spec"])
        for key, value in changes.items():
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
        self.apply(spec, name=name)

    def annotate(self, name: str = NAME, **annotations: str) -> None:
        obj = self.kube.objects[(NAMESPACE, name)]
        obj["metadata"]["annotations"].update(annotations)

    def set_annotation(self, key: str, value: str, *, name: str = NAME) -> None:
        self.kube.objects[(NAMESPACE, name)]["metadata"]["annotations"][key] = value

    def body(self, name: str = NAME) -> dict[str, Any]:
        return copy.deepcopy(self.kube.objects[(NAMESPACE, name)])

    def status(self, name: str = NAME) -> dict[str, Any]:
        return self.kube.status_of(NAMESPACE, name)

    def condition(self, type_: str, name: str = NAME) -> dict[str, Any] | None:
        return next(
            (c for c in self.status(name).get("conditions", []) if c["type"] == type_), None
        )

    def secret(self, name: str = NAME) -> dict[str, str] | None:
        return self.kube.secret_data(NAMESPACE, f"{name}-blooio-webhook")

    # -- running the reconcile layer as the handlers do -----------------------------------

    def ctx(
        self,
        name: str = NAME,
        *,
        attempt: int = 0,
        claimed_ids: Iterable[str] = (),
    ) -> WebhookContext:
        return WebhookContext.build(
            self.deps,
            body=self.body(name),
            events=self.events,
            attempt=attempt,
            claimed_ids=frozenset(claimed_ids),
        )

    async def run(
        self,
        step: Step = lifecycle.reconcile,
        *,
        name: str = NAME,
        attempt: int = 0,
        claimed_ids: Iterable[str] = (),
        action: str = "create",
        let_time_pass: bool = True,
    ) -> Exception | None:
        """Run ``step`` like ``handlers.run``: a failure is recorded and returned.

        A ``SimulatedCrash`` propagates untouched (a dead process records nothing). When
        the step waits for an interrupted request to settle at Blooio (a transient
        failure with that delay), the failure is recorded, the clock moves on by the
        delay and the step runs again, as kopf retries it (``let_time_pass=False``
        returns that failure instead).
        """
        for _ in range(4):
            ctx = self.ctx(name, attempt=attempt, claimed_ids=claimed_ids)
            try:
                await step(ctx)
            except Exception as exc:
                err = await lifecycle.record_failure(ctx, exc, action=action)
                self.errors.append(err)
                settling = isinstance(err, TransientFailure) and err.reason == reasons.SETTLING
                if not (settling and let_time_pass):
                    return err
                assert isinstance(err, TransientFailure)
                self.advance(err.delay)
                attempt += 1
                continue
            return None
        raise AssertionError("still waiting for interrupted requests after 4 retries")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of wall-clock time pass for the reconcile layer."""
        self.clock_offset += seconds

    async def reconcile(self, name: str = NAME, **kwargs: Any) -> None:
        """Reconcile and insist on success."""
        err = await self.run(lifecycle.reconcile, name=name, **kwargs)
        assert err is None, f"reconcile failed: {type(err).__name__}: {err}"

    def crash_at(self, point: str, nth: int = 1) -> CrashAt:
        crash = CrashAt(point, nth)
        self.deps.crash = crash
        return crash

    def no_crash(self) -> None:
        self.deps.crash = CrashPoints(None)

    def reset_counters(self) -> None:
        """Forget calls, keys asked for, writes and events (e.g. once a resource is Ready)."""
        self.blooio.reset_calls()
        self.pool.keys.clear()
        self.kube.reset_writes()
        self.events.clear()
        self.journal.clear()

    async def ready(self, spec: dict[str, Any] | None = None, **apply_kwargs: Any) -> str:
        """Apply and reconcile a resource to Ready; return its webhook id; reset counters."""
        self.apply(spec, **apply_kwargs)
        await self.reconcile(name=apply_kwargs.get("name", NAME))
        webhook_id = self.status(apply_kwargs.get("name", NAME))["webhookId"]
        self.reset_counters()
        return str(webhook_id)
