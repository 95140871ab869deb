"""The soak's fleet: its resources, changed as a user would, and looked at from outside.

``SoakFleet`` is what the fault classes (``soak_faults``) act through: create, delete
(also force-delete, finalizers removed), adopt, rotate, drift a webhook at Blooio,
deliver events; and what the soak judges with: the objects, their webhook ids, Events,
and the storm's fleet invariants (``invariants.fleet_problems``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from tests.chaos.invariants import (
    ROTATE_ANNOTATION,
    FleetProblem,
    Key,
    fleet_problems,
    key_of,
)
from tests.chaos.run import delete_once, retrying
from tests.chaos.soak_budget import Scale
from tests.chaos.soak_faults import ADOPT
from tests.chaos.soak_world import CREDENTIALS_SECRET, SoakWorld
from tests.chaos.storm import stamp
from tests.integration.webhooks import GROUP, PLURAL, VERSION


@dataclass
class SoakConfig:
    resources: int = 100
    namespaces: int = 2
    hour_seconds: float = 180.0
    classes: str = "abcdef"
    restarts: int = 3  # class e: apiserver restarts in the hour
    other_key_share: float = 0.25  # of the fleet on the second API key
    settle_seconds: float = 300.0  # for the fleet to be all Ready before a class
    converge_seconds: float = 240.0  # after the fault, for every count to reach zero
    stable_seconds: float = 4.0
    proof_seconds: float = 60.0
    poll_seconds: float = 2.0
    log_level: str = "INFO"  # the operator's default: log volume as users get it


@dataclass
class Member:
    ns: str
    name: str
    base: str  # the url without its version
    other_key: bool = False
    deleted: bool = False
    version: int = 0

    @property
    def key(self) -> Key:
        return (self.ns, self.name)

    @property
    def url(self) -> str:
        return f"{self.base}/v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.ns}/{self.name}"


@dataclass
class SoakFleet:
    world: SoakWorld
    config: SoakConfig
    seed: int = 1
    log: Callable[[str], None] = print
    members: dict[Key, Member] = field(default_factory=dict)
    touched: set[Key] = field(default_factory=set)
    created_in_window: list[Key] = field(default_factory=list)
    class_problems: list[FleetProblem] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)
    serial: int = 0

    def __post_init__(self) -> None:
        self.scale = Scale(self.config.hour_seconds)
        self.rng = random.Random(self.seed)

    # --- the fleet, changed as a user would ----------------------------------------------------

    def new_member(self, ns: str, name: str, *, other_key: bool = False) -> Member:
        member = Member(ns, name, f"https://soak.example.com/{ns}/{name}", other_key=other_key)
        self.members[member.key] = member
        return member

    def create(self, member: Member, annotations: dict[str, str] | None = None) -> None:
        spec: dict[str, Any] = {"url": member.url}
        if member.other_key:
            spec["credentialsRef"] = {"name": CREDENTIALS_SECRET, "key": "api-key"}
        hooks = self.world.hooks(member.ns)
        retrying(lambda: hooks.get(member.name) or hooks.create(member.name, spec, annotations))

    def top_up(self) -> None:
        share = self.config.other_key_share
        while sum(not m.deleted for m in self.members.values()) < self.config.resources:
            i = self.serial
            self.serial += 1
            ns = self.world.namespaces[i % len(self.world.namespaces)]
            other = share > 0 and i % round(1 / share) == round(1 / share) - 1
            self.create(self.new_member(ns, f"soak-{i}", other_key=other))

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if not m.deleted]

    def pick(self, n: int, *, default_key: bool = False, touch: bool = True) -> list[Member]:
        """``n`` live resources the soak has not touched in this class (touched from now)."""
        pool = [
            m
            for m in self.live()
            if m.key not in self.touched and not (default_key and m.other_key)
        ]
        chosen = self.rng.sample(sorted(pool, key=lambda m: m.key), min(n, len(pool)))
        if touch:
            self.touched |= {m.key for m in chosen}
        return chosen

    def member_of(self, obj: dict[str, Any]) -> Member | None:
        return self.members.get(key_of(obj))

    def webhook_id(self, member: Member) -> str | None:
        obj = self.world.hooks(member.ns).get(member.name) or {}
        return (obj.get("status") or {}).get("webhookId")

    def drift(self) -> None:
        (member,) = self.pick(1, default_key=True)
        webhook_id = self.webhook_id(member)
        assert webhook_id, f"{member.label} has no webhook"
        self.world.sim.admin.mutate(webhook_id, url=f"https://drift.example.com/{member.name}")
        self.note(f"drifted {member.label} ({webhook_id}) at Blooio")

    def delete(self, member: Member, *, force: bool = False) -> None:
        hooks = self.world.hooks(member.ns)
        member.deleted = True
        self.touched.add(member.key)
        if force:  # a user removing the finalizers: it vanishes without the operator
            with contextlib.suppress(k8s.ApiException):
                retrying(lambda: hooks.patch(member.name, {"metadata": {"finalizers": None}}))
        retrying(lambda: delete_once(hooks, member.name))

    def adopt(self, vanished: Member, webhook_id: str) -> None:
        adopter = self.new_member(vanished.ns, f"{vanished.name}-a", other_key=vanished.other_key)
        adopter.base, adopter.version = vanished.base, vanished.version  # its webhook's url
        self.touched.add(adopter.key)
        self.created_in_window.append(adopter.key)
        self.create(adopter, {ADOPT: webhook_id})
        self.note(f"{adopter.label} adopts {webhook_id} of the vanished {vanished.label}")

    def rotate(self, member: Member) -> None:
        token = f"soak-{time.monotonic_ns()}"
        patch = {"metadata": {"annotations": {ROTATE_ANNOTATION: token}}}
        retrying(lambda: self.world.hooks(member.ns).patch(member.name, patch))

    def deliver_all(self, url: str) -> None:
        failed = 0
        for webhook_id in self.ids(self.objects()):
            try:
                self.world.sim.admin.deliver(webhook_id, target_url=url)
            except Exception:  # a webhook deleted meanwhile
                failed += 1
        if failed:
            self.note(f"{failed} deliveries could not be made")

    def note(self, text: str) -> None:
        self.journal.append(f"{stamp()} {text}")
        self.log(f"{stamp()}   {text}")

    # --- looking from outside ----------------------------------------------------------------

    def objects(self) -> list[dict[str, Any]]:
        custom = k8s.CustomObjectsApi(self.world.api)
        out: list[dict[str, Any]] = []
        for ns in self.world.namespaces:
            listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
            out += listed["items"]
        return out

    def ids(self, objects: list[dict[str, Any]]) -> dict[str, Key]:
        return {
            str(o["status"]["webhookId"]): key_of(o)
            for o in objects
            if (o.get("status") or {}).get("webhookId")
        }

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ns in self.world.namespaces:
            raw = self.world.core.list_namespaced_event(ns, _preload_content=False)
            out += json.loads(raw.data)["items"]
        return out

    def problems(self) -> list[FleetProblem]:
        secrets: dict[Key, dict[str, str]] = {}
        for ns in self.world.namespaces:
            for secret in self.world.core.list_namespaced_secret(ns).items:
                data = secret.data or {}
                secrets[(ns, str(secret.metadata.name))] = {
                    k: base64.b64decode(v).decode() for k, v in data.items()
                }
        deleted = {m.key for m in self.members.values() if m.deleted}
        return fleet_problems(self.objects(), secrets, self.world.sim.webhooks(), deleted)
