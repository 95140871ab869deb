"""A small asyncio client of the Kubernetes REST API (aiohttp), for the bench and the floor.

Only what they need: JSON requests with a bearer token, list, and watch streams that
survive reconnects. Objects are plain dicts.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

GROUP = "blooio.com"
VERSION = "v1alpha1"
PLURAL = "blooiowebhooks"


def bwh_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class KubeError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class Gone(KubeError):
    """410: the watch resourceVersion is too old; list again."""


def read_kubeconfig(path: Path) -> tuple[str, str, str]:
    """(server, CA file, token) of the current context of a token kubeconfig."""
    cfg = yaml.safe_load(path.read_text())
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    return cluster["server"], cluster["certificate-authority"], user["token"]


class Kube:
    """One aiohttp session against one apiserver; create it inside the running loop."""

    def __init__(self, server: str, ca_file: str, token: str, *, limit: int = 64) -> None:
        self.server = server.rstrip("/")
        ctx = ssl.create_default_context(cafile=ca_file)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=limit),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    @classmethod
    def from_kubeconfig(cls, path: Path, *, limit: int = 64) -> Kube:
        server, ca, token = read_kubeconfig(path)
        return cls(server, ca, token, limit=limit)

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._session.request(
            method,
            self.server + path,
            data=data,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                cls = Gone if resp.status == 410 else KubeError
                raise cls(resp.status, method, path, text)
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def create_namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        try:
            await self.create("/api/v1/namespaces", body)
        except KubeError as exc:
            if exc.status != 409:
                raise

    async def service_account_token(self, namespace: str, name: str) -> str:
        """Create the ServiceAccount if needed and mint a 2 h token (TokenRequest API)."""
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        try:
            await self.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", sa)
        except KubeError as exc:
            if exc.status != 409:
                raise
        req = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 7200},
        }
        resp = await self.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", req
        )
        return str(resp["status"]["token"])

    async def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """One watch request: yields (type, object) until the server ends the stream."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        async with self._session.get(
            self.server + path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_connect=10),
        ) as resp:
            if resp.status >= 400:
                text = await resp.text()
                cls = Gone if resp.status == 410 else KubeError
                raise cls(resp.status, "WATCH", path, text)
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        code = int(obj.get("code") or 500)
                        cls = Gone if code == 410 else KubeError
                        raise cls(code, "WATCH", path, json.dumps(obj))
                    yield str(event.get("type")), obj


async def watch_forever(
    kube: Kube,
    path: str,
    on_object: Callable[[str, dict[str, Any]], None],
    *,
    on_synced: Callable[[], None] | None = None,
) -> None:
    """List, then watch from the list's resourceVersion, with reconnects and relists.

    ``on_object(type, obj)`` sees every object (type ``LISTED`` for list items).
    ``on_synced()`` is called once, after the first list: from then on nothing is
    missed, since the watch starts at that list's resourceVersion.
    """
    synced = False
    while True:
        listing = await kube.get(path)
        for obj in listing.get("items") or []:
            on_object("LISTED", obj)
        rv = str(listing["metadata"]["resourceVersion"])
        if not synced:
            synced = True
            if on_synced is not None:
                on_synced()
        while True:
            try:
                async for kind, obj in kube.watch(path, rv):
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind != "BOOKMARK":
                        on_object(kind, obj)
            except Gone:
                break  # relist
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
