"""Kubernetes calls made by the operator, with the vendor's exceptions converted here.

The official ``kubernetes`` client is synchronous; calls run on a dedicated thread pool
so the kopf event loop never blocks. Secret values are handled as bytes/str and never
logged; exception messages carry only the API status and reason.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from blooio_operator import fence as fencing
from blooio_operator.models.resource import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger("blooio_operator.kube")
T = TypeVar("T")
COMPONENT = "blooio-operator"  # Events' reporting component ("From" in kubectl describe)
MAX_EVENT_MESSAGE = 1024


class KubeError(Exception):
    """A Kubernetes API call failed; the message never contains object data."""

    def __init__(self, status: int | None, reason: str, action: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{action}: Kubernetes API answered {status} {reason}")


class KubeNotFound(KubeError):
    pass


class KubeConflict(KubeError):
    pass


class KubeForbidden(KubeError):
    pass


class KubeInvalid(KubeError):
    """422: the API server rejected what we sent (e.g. a label value that cannot be).

    ``detail`` is the API server's explanation (field paths and rules), with every value
    passed as ``redact`` removed; it is meant for a condition message.
    """

    def __init__(self, status: int | None, reason: str, action: str, detail: str) -> None:
        super().__init__(status, reason, action)
        self.detail = detail


MAX_DETAIL = 400


def _invalid_detail(exc: ApiException, redact: tuple[str, ...]) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    text = " ".join(str(message or exc.reason or "invalid").split())
    for value in redact:
        if value:
            text = text.replace(value, "[REDACTED]")
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _convert(exc: ApiException, action: str, redact: tuple[str, ...] = ()) -> KubeError:
    status = int(exc.status) if exc.status else None
    reason = str(exc.reason or "")
    if status == 422:
        return KubeInvalid(status, reason, action, _invalid_detail(exc, redact))
    cls: type[KubeError] = {404: KubeNotFound, 409: KubeConflict, 403: KubeForbidden}.get(
        status or 0, KubeError
    )
    return cls(status, reason, action)


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    try:
        return min(float(headers.get("Retry-After", "")), 10.0)
    except ValueError:
        return None


# Marks a Secret written by the operator for the BlooioWebhook with this uid, also when
# it carries no ownerReference (deletionPolicy Orphan: see KubeClient.write_secret).
OWNER_UID_ANNOTATION = "blooio.com/owner-uid"


@dataclass(frozen=True)
class OwnerRef:
    """The BlooioWebhook that owns a Secret."""

    name: str
    uid: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


@dataclass(frozen=True)
class SecretView:
    """What the operator needs to know about a Secret."""

    name: str
    data: dict[str, bytes] = field(repr=False)  # Secret bytes: never in a repr or a log
    owner_uids: frozenset[str]
    controller_uid: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str | None
    finalizers: tuple[str, ...] = ()
    deleting: bool = False  # metadata.deletionTimestamp is set

    def owned_by(self, uid: str) -> bool:
        """Written by the operator for the resource ``uid`` (with or without ownerReference)."""
        return self.controller_uid == uid or self.annotations.get(OWNER_UID_ANNOTATION) == uid


@dataclass(frozen=True)
class LeaseRecord:
    """A coordination.k8s.io Lease as leader election reads it."""

    holder: str | None
    lease_duration_seconds: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str | None


def _lease_record(obj: Any) -> LeaseRecord:
    spec = obj.spec
    meta = obj.metadata
    return LeaseRecord(
        holder=(spec.holder_identity or None) if spec else None,
        lease_duration_seconds=spec.lease_duration_seconds if spec else None,
        acquire_time=spec.acquire_time if spec else None,
        renew_time=spec.renew_time if spec else None,
        transitions=(spec.lease_transitions or 0) if spec else 0,
        resource_version=meta.resource_version if meta else None,
    )


def _micro_time(value: datetime | None) -> str | None:
    # metav1.MicroTime: RFC 3339 with exactly six fractional digits.
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fenced(fence: fencing.Fence, action: str, fn: Callable[[], T]) -> T:
    # In the kube thread, right before the request is built and sent: a thread that
    # waited in the pool's queue past the term sends nothing.
    fence.check(action)
    return fn()


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _fence_transport(api: k8s.ApiClient, fence: fencing.Fence) -> None:
    """Check the term once more where urllib3 takes over, after the client has built and
    serialised the request: the last point before the bytes leave that we own."""
    pool = api.rest_client.pool_manager
    send = pool.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() not in _READ_METHODS:
            fence.check(f"{method.upper()} {urllib3.util.parse_url(url).path}")
        return send(method, url, *args, **kwargs)

    pool.request = request  # type: ignore[method-assign]


def load_api_client() -> k8s.ApiClient:
    """In-cluster config when running in a Pod, else the current kubeconfig."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    conf = k8s.Configuration.get_default_copy()
    conf.connection_pool_maxsize = 64
    return k8s.ApiClient(conf)


class KubeClient:
    """``fence``: the leadership term every write is checked against (default: the running
    operator's, ``fence.current()``; None without leader election). Reads are not
    fenced; Lease calls are the term itself and never are."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        max_workers: int = 32,
        fence: fencing.Fence | None = None,
    ) -> None:
        self._api = api
        self._core = k8s.CoreV1Api(api)
        self._custom = k8s.CustomObjectsApi(api)
        self._coordination = k8s.CoordinationV1Api(api)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kube")
        self.fence = fence if fence is not None else fencing.current()
        if self.fence is not None:
            _fence_transport(api, self.fence)
        self.writes = 0

    async def _call(
        self,
        action: str,
        fn: Callable[..., T],
        *args: Any,
        redact: tuple[str, ...] = (),
        write: bool = False,
        **kwargs: Any,
    ) -> T:
        loop = asyncio.get_running_loop()
        call: Callable[[], T] = functools.partial(fn, *args, **kwargs)
        fence = self.fence if write else None
        if fence is not None:
            call = functools.partial(_fenced, fence, action, call)
        for attempt in range(4):
            if fence is not None:
                fence.check(action)  # before queueing for a thread, and before a retry
            try:
                return await loop.run_in_executor(self._pool, call)
            except ApiException as exc:
                # 429 from the API server's in-flight limits means "not processed": safe
                # to repeat even for a create. Anything else is the reconcile layer's call.
                if exc.status != 429 or attempt == 3:
                    raise _convert(exc, action, redact) from None
                await asyncio.sleep(_retry_after(exc) or 0.25 * 2**attempt)
            except urllib3.exceptions.HTTPError as exc:
                # The API server is unreachable (restarting, say): a KubeError like any
                # other, not a stack trace from deep inside urllib3.
                raise KubeError(None, f"unreachable ({type(exc).__name__})", action) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- Secrets -----------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        try:
            obj = await self._call(
                f"read Secret {namespace}/{name}",
                self._core.read_namespaced_secret,
                name,
                namespace,
            )
        except KubeNotFound:
            return None
        meta = obj.metadata
        assert meta is not None
        owners = meta.owner_references or []
        controller = next((o.uid for o in owners if o.controller), None)
        return SecretView(
            name=name,
            data={k: base64.b64decode(v) for k, v in (obj.data or {}).items()},
            owner_uids=frozenset(o.uid for o in owners),
            controller_uid=controller,
            labels=dict(meta.labels or {}),
            annotations=dict(meta.annotations or {}),
            resource_version=meta.resource_version,
            finalizers=tuple(meta.finalizers or ()),
            deleting=meta.deletion_timestamp is not None,
        )

    async def read_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """A single key of a Secret as text (credentials); None if absent."""
        view = await self.read_secret(namespace, name)
        if view is None or key not in view.data:
            return None
        return view.data[key].decode("utf-8").strip()

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
        """Create or replace the Secret with exactly this data (type Opaque).

        ``owner`` None: no ownerReference at all (deletionPolicy Orphan: under foreground
        deletion the garbage collector deletes dependents before any finalizer could
        release them); an existing one of ours is removed.
        """
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [owner.to_dict()] if owner else [],
            },
            "stringData": data,
        }
        self.writes += 1
        if exists:
            # Strategic merge would keep stale keys; a merge patch with explicit data
            # replaces what we own while leaving other fields (e.g. someone's extra labels).
            patch = dict(body)
            patch["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
            patch.pop("stringData")
            if owner is None:
                # Strategic merge: null removes the list (a [] would merge into it).
                patch["metadata"] = {**body["metadata"], "ownerReferences": None}
            await self._call(
                f"patch Secret {namespace}/{name}",
                self._core.patch_namespaced_secret,
                name,
                namespace,
                patch,
                redact=tuple(data.values()),
                write=True,
            )
        else:
            await self._call(
                f"create Secret {namespace}/{name}",
                self._core.create_namespaced_secret,
                namespace,
                body,
                redact=tuple(data.values()),
                write=True,
            )

    async def add_secret_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        """Add ``finalizer`` to a Secret (strategic merge: a set, no read needed)."""
        self.writes += 1
        await self._call(
            f"add finalizer to Secret {namespace}/{name}",
            self._core.patch_namespaced_secret,
            name,
            namespace,
            {"metadata": {"finalizers": [finalizer]}},
            write=True,
        )

    async def remove_secret_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        """Remove ``finalizer`` from a Secret, if it is still there."""
        self.writes += 1
        try:
            await self._call(
                f"remove finalizer from Secret {namespace}/{name}",
                self._core.patch_namespaced_secret,
                name,
                namespace,
                {"metadata": {"$deleteFromPrimitiveList/finalizers": [finalizer]}},
                write=True,
            )
        except KubeNotFound:
            pass

    async def release_secret(self, namespace: str, name: str, owner_uid: str) -> None:
        """Remove our ownerReference so the Secret survives the resource (Orphan)."""
        view = await self.read_secret(namespace, name)
        if view is None or owner_uid not in view.owner_uids:
            return
        obj = await self._call(
            f"read Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
        )
        refs = [
            {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}
            for o in ((obj.metadata.owner_references if obj.metadata else None) or [])
            if o.uid != owner_uid
        ]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": view.resource_version},
            {"op": "replace", "path": "/metadata/ownerReferences", "value": refs},
        ]
        self.writes += 1
        await self._call(
            f"release Secret {namespace}/{name}",
            self._core.patch_namespaced_secret,
            name,
            namespace,
            patch,
            write=True,
        )

    async def delete_secret(self, namespace: str, name: str) -> None:
        self.writes += 1
        try:
            await self._call(
                f"delete Secret {namespace}/{name}",
                self._core.delete_namespaced_secret,
                name,
                namespace,
                write=True,
            )
        except KubeNotFound:
            pass

    # --- the BlooioWebhook status ------------------------------------------------

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource (``None`` values delete fields)."""
        self.writes += 1
        await self._call(
            f"patch status of {namespace}/{name}",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            write=True,
        )

    # --- Events ------------------------------------------------------------------

    async def create_event(
        self, involved: dict[str, Any], *, type: str, reason: str, message: str
    ) -> None:
        """Post a core/v1 Event about ``involved`` (apiVersion, kind, namespace, name, uid)."""
        if len(message) > MAX_EVENT_MESSAGE:
            message = message[: MAX_EVENT_MESSAGE - 3] + "..."
        now = datetime.now(UTC).isoformat()
        namespace = involved["namespace"]
        body = {
            "metadata": {"namespace": namespace, "generateName": f"{involved['name']}."},
            "type": type,
            "reason": reason,
            "message": message,
            "action": reason,
            "involvedObject": involved,
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "source": {"component": COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.writes += 1
        await self._call(
            f"post Event {reason} about {namespace}/{involved['name']}",
            self._core.create_namespaced_event,
            namespace,
            body,
            write=True,
        )

    async def list_webhook_ids(
        self,
        namespace: str | None = None,
        *,
        unclaimed: bool = False,
        statuses: list[dict[str, Any]] | None = None,
    ) -> dict[str, str]:
        """uid -> status.webhookId of every BlooioWebhook (of ``namespace``, else of the
        cluster) that records one (``unclaimed``: of every one, "" for none yet);
        paginated, and only these two fields are kept (``statuses``: also appended there,
        as ``{uid, namespace, name, status}`` of each one that records an id)."""
        kwargs: dict[str, Any] = {"limit": 500}
        found: dict[str, str] = {}
        while True:
            if namespace is None:
                obj: Any = await self._call(
                    "list BlooioWebhooks",
                    self._custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    **kwargs,
                )
            else:
                obj = await self._call(
                    f"list BlooioWebhooks in {namespace}",
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    **kwargs,
                )
            for item in obj.get("items", []):
                status = item.get("status") or {}
                webhook_id = status.get("webhookId") if isinstance(status, dict) else None
                if webhook_id or unclaimed:
                    found[item["metadata"]["uid"]] = str(webhook_id or "")
                if webhook_id and statuses is not None:
                    meta = item["metadata"]
                    statuses.append(
                        {
                            "uid": meta["uid"],
                            "namespace": meta["namespace"],
                            "name": meta["name"],
                            "status": {k: v for k, v in status.items() if k != "kopf"},
                        }
                    )
            token = (obj.get("metadata") or {}).get("continue")
            if not token:
                return found
            kwargs["_continue"] = token

    async def list_webhook_resources(
        self, namespace: str, *, credentials_name: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """BlooioWebhooks of ``namespace`` as the API server has them now: all, or (at most
        ``limit`` of) those whose spec.credentialsRef.name is ``credentials_name``.

        The filter is a field selector (the CRD's selectableFields); an API server that does
        not know it (before Kubernetes 1.31) answers 400, and the whole namespace is listed
        instead (callers filter again).
        """
        kwargs: dict[str, Any] = {}
        if credentials_name is not None:
            kwargs["field_selector"] = f"spec.credentialsRef.name={credentials_name}"
            if limit is not None:
                kwargs["limit"] = limit
        action = f"list BlooioWebhooks in {namespace}"
        try:
            obj: Any = await self._call(
                action,
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                **kwargs,
            )
        except KubeError as exc:
            if exc.status != 400 or not kwargs:
                raise
            obj = await self._call(
                action,
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
            )
        return [dict(item) for item in obj.get("items", [])]

    async def served_status_fields(self) -> set[str] | None:
        """The status fields the installed BlooioWebhook CRD declares (its served version);
        None when the CRD may not be read (the namespaced RBAC variant)."""
        api = k8s.ApiextensionsV1Api(self._api)
        try:
            crd: Any = await self._call(
                "read the BlooioWebhook CRD",
                api.read_custom_resource_definition,
                f"{PLURAL}.{GROUP}",
            )
        except KubeForbidden:
            return None
        crd = crd.to_dict() if hasattr(crd, "to_dict") else crd
        for version in (crd.get("spec") or {}).get("versions") or []:
            if version.get("name") == VERSION:
                schema = (version.get("schema") or {}).get("open_apiv3_schema") or {}
                status = (schema.get("properties") or {}).get("status") or {}
                return set((status.get("properties") or {}).keys())
        return set()

    async def read_webhook_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: Any = await self._call(
                f"read {namespace}/{name}",
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except KubeNotFound:
            return None
        return dict(obj)

    # --- the leader-election Lease (never fenced: renewing it is what keeps the term) ---

    def _lease_body(
        self,
        namespace: str,
        name: str,
        *,
        holder: str | None,
        lease_duration_seconds: int,
        acquire_time: datetime | None,
        renew_time: datetime | None,
        transitions: int,
        resource_version: str | None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if resource_version is not None:
            # Optimistic concurrency: of two candidates writing after the same read,
            # exactly one succeeds; the other gets 409.
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": lease_duration_seconds,
                "acquireTime": _micro_time(acquire_time),
                "renewTime": _micro_time(renew_time),
                "leaseTransitions": transitions,
            },
        }

    async def read_lease(
        self, namespace: str, name: str, *, request_timeout: float | None = None
    ) -> LeaseRecord | None:
        try:
            obj = await self._call(
                f"read Lease {namespace}/{name}",
                self._coordination.read_namespaced_lease,
                name,
                namespace,
                _request_timeout=request_timeout,
            )
        except KubeNotFound:
            return None
        return _lease_record(obj)

    async def write_lease(
        self,
        namespace: str,
        name: str,
        *,
        holder: str | None,
        lease_duration_seconds: int,
        acquire_time: datetime | None,
        renew_time: datetime | None,
        transitions: int,
        resource_version: str | None,
        request_timeout: float | None = None,
    ) -> LeaseRecord:
        """Create the Lease (``resource_version`` None) or replace the version read.

        Raises ``KubeConflict`` when someone else created or changed it first.
        """
        body = self._lease_body(
            namespace,
            name,
            holder=holder,
            lease_duration_seconds=lease_duration_seconds,
            acquire_time=acquire_time,
            renew_time=renew_time,
            transitions=transitions,
            resource_version=resource_version,
        )
        if resource_version is None:
            obj = await self._call(
                f"create Lease {namespace}/{name}",
                self._coordination.create_namespaced_lease,
                namespace,
                body,
                _request_timeout=request_timeout,
            )
        else:
            obj = await self._call(
                f"replace Lease {namespace}/{name}",
                self._coordination.replace_namespaced_lease,
                name,
                namespace,
                body,
                _request_timeout=request_timeout,
            )
        return _lease_record(obj)
