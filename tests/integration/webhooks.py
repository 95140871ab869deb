"""What a user sees of a BlooioWebhook: create/edit it, read conditions, Events, Secret."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client as k8s

from tests.helpers import wait_for

GROUP, VERSION, PLURAL = "blooio.com", "v1alpha1", "blooiowebhooks"


class Webhooks:
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)

    def create(self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "BlooioWebhook",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name
            )
            return obj
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, patch)

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def status(self, name: str) -> dict[str, Any]:
        obj = self.get(name) or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for cond in self.status(name).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return None

    def wait_condition(
        self,
        name: str,
        type_: str,
        status: str = "True",
        *,
        timeout: float = 60,
        reason: str | None = None,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get(name) or {}
            gen = obj.get("metadata", {}).get("generation")
            cond = self.condition(name, type_)
            if cond is None or cond["status"] != status:
                return None
            if reason is not None and cond["reason"] != reason:
                return None
            if obj.get("status", {}).get("observedGeneration") != gen and type_ == "Ready":
                return None
            return cond

        return wait_for(probe, timeout=timeout, message=f"{name} {type_}={status} {reason or ''}")

    def wait_ready(self, name: str, timeout: float = 60) -> dict[str, Any]:
        self.wait_condition(name, "Ready", "True", timeout=timeout)
        return self.status(name)

    def events(self, name: str | None = None) -> list[k8s.CoreV1Event]:
        items = self.core.list_namespaced_event(self.ns).items
        return [e for e in items if name is None or e.involved_object.name == name]

    def event_reasons(self, name: str | None = None) -> list[str]:
        return [e.reason for e in self.events(name)]

    def wait_event(self, name: str, reason: str, timeout: float = 30) -> k8s.CoreV1Event:
        return wait_for(
            lambda: next((e for e in self.events(name) if e.reason == reason), None),
            timeout=timeout,
            message=f"Event {reason} for {name}",
        )

    def secret(self, name: str) -> k8s.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, self.ns)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret_data(self, name: str) -> dict[str, str]:
        sec = self.secret(name)
        if sec is None or not sec.data:
            return {}
        return {k: base64.b64decode(v).decode() for k, v in sec.data.items()}
