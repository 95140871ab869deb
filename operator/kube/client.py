"""Kubernetes calls made by the operator, with the vendor's exceptions converted here.

The official ``kubernetes`` client is synchronous; calls run on a dedicated thread pool
so the kopf event loop never blocks. Secret values are handled as bytes/str and never
logged; exception messages carry only the API status and reason.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

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


def _convert(exc: ApiException, action: str) -> KubeError:
    status = int(exc.status) if exc.status else None
    reason = str(exc.reason or "")
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
    data: dict[str, bytes]
    owner_uids: frozenset[str]
    controller_uid: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str | None


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
    def __init__(self, api: k8s.ApiClient, *, max_workers: int = 32) -> None:
        self._api = api
        self._core = k8s.CoreV1Api(api)
        self._custom = k8s.CustomObjectsApi(api)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kube")
        self.writes = 0

    async def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        for attempt in range(4):
            try:
                return await loop.run_in_executor(
                    self._pool, functools.partial(fn, *args, **kwargs)
                )
            except ApiException as exc:
                # 429 from the API server's in-flight limits means "not processed": safe
                # to repeat even for a create. Anything else is the reconcile layer's call.
                if exc.status != 429 or attempt == 3:
                    raise _convert(exc, action) from None
                await asyncio.sleep(_retry_after(exc) or 0.25 * 2**attempt)
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
        """Create or replace the Secret with exactly this data (type Opaque)."""
        body = {
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
            await self._call(
                f"patch Secret {namespace}/{name}",
                self._core.patch_namespaced_secret,
                name,
                namespace,
                patch,
            )
        else:
            await self._call(
                f"create Secret {namespace}/{name}",
                self._core.create_namespaced_secret,
                namespace,
                body,
            )

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
        )

    async def delete_secret(self, namespace: str, name: str) -> None:
        self.writes += 1
        try:
            await self._call(
                f"delete Secret {namespace}/{name}",
                self._core.delete_namespaced_secret,
                name,
                namespace,
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
        )

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
