"""The soak's fault classes: each one persistent failure, on for one compressed hour.

A class switches its fault on, does its timed actions during the hour (at shares of the
hour), and switches the fault off; every class also drifts one webhook at Blooio a third
of the way in, so the fix path runs under the fault. What the classes need of the soak
(the fleet, its world, making changes as a user would) is the ``Soak`` of ``soak.py``.

- a: every Blooio endpoint answers 503;
- b: every endpoint hangs until the client times out;
- c: every endpoint answers 429 with Retry-After;
- d: the operator's default API key is revoked, and restored after the hour;
- e: the kube-apiserver restarts (3 times) while the operator is paused, and resources are
  deleted in the gap: most normally (Terminating until the operator comes back), one per
  restart force-deleted (finalizers removed: it vanishes unseen); once the operator has
  finished the ordinary deletions, a new resource adopts the vanished one's webhook
  (``blooio.com/adopt-webhook-id``), which only works if the operator let go of it;
- f: the receiver is down for the hour (deliveries to a closed port) and a tenth of the
  fleet rotates its secret (``blooio.com/rotate-secret``) in the middle of it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.chaos.invariants import FleetProblem
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.chaos.soak import Soak

Action = tuple[float, str, Callable[[], None]]  # (share of the hour, what, do it)
ADOPT = "blooio.com/adopt-webhook-id"


@dataclass
class FaultClass:
    key: str
    title: str

    def __post_init__(self) -> None:
        """Per-run state of a subclass."""

    def prepare(self, soak: Soak) -> None:
        """Before the window opens (not counted)."""

    def on(self, soak: Soak) -> None:
        """The fault starts (the window is open)."""

    def actions(self, soak: Soak) -> list[Action]:
        return []

    def off(self, soak: Soak) -> None:
        """The fault ends; the operator must now converge by itself."""

    def problems(self, soak: Soak) -> list[FleetProblem]:
        """Class-specific problems, judged with the fleet's after the fault."""
        return []

    def cleanup(self, soak: Soak) -> None:
        """Always, after the class (interrupted or not)."""


@dataclass
class BlooioFault(FaultClass):
    """One rule on every /v4 request for the whole hour (no count: it lasts)."""

    rule: dict[str, Any] = field(default_factory=dict)

    def on(self, soak: Soak) -> None:
        rule = dict(self.rule)
        if rule["kind"] == "rate_limit":
            rule["retry_after"] = max(1, round(soak.scale.seconds(60)))  # a minute, scaled
        soak.world.sim.admin.set_faults(rules=[rule])

    def off(self, soak: Soak) -> None:
        rules = soak.world.sim.admin.faults().get("rules", [])
        soak.world.sim.admin.clear_faults()
        soak.note(f"{sum(int(r.get('fired') or 0) for r in rules)} requests faulted")


class KeyRevoked(FaultClass):
    def on(self, soak: Soak) -> None:
        soak.world.sim.admin.revoke_api_key(soak.world.default_key)

    def off(self, soak: Soak) -> None:
        soak.world.sim.admin.add_api_key(soak.world.default_key)

    def actions(self, soak: Soak) -> list[Action]:
        return [(0.5, "look for the revocation on every resource", lambda: self.look(soak))]

    def look(self, soak: Soak) -> None:
        """Half an hour in (many check intervals): every resource on the revoked key says so."""
        unseen = []
        for obj in soak.objects():
            member = soak.member_of(obj)
            if member is None or member.other_key or member.deleted:
                continue
            reasons = {c.get("reason") for c in (obj.get("status") or {}).get("conditions", [])}
            if not any(str(r).startswith("Credentials") for r in reasons):
                unseen.append(FleetProblem("revocation not shown", member.label, str(reasons)))
        soak.class_problems += unseen
        soak.note(f"revocation not shown on {len(unseen)} resources of the default key")


class ApiserverGaps(FaultClass):
    deletes_per_restart = 0.03  # share of the fleet deleted in each gap
    seen_deadline = 60.0  # for the operator to finish the gap's deletions after it

    def actions(self, soak: Soak) -> list[Action]:
        n = soak.config.restarts
        return [
            ((i + 0.5) / (n + 0.5), f"apiserver restart {i + 1}", lambda: self.gap(soak))
            for i in range(n)
        ]

    def gap(self, soak: Soak) -> None:
        """Restart the apiserver with the operator paused, delete in the gap, resume it;
        once it has finished the gap's ordinary deletions (so it has seen the world after
        the gap), new resources adopt the webhooks of the ones that vanished."""
        world = soak.world
        deletes = max(1, round(self.deletes_per_restart * soak.config.resources))
        victims = soak.pick(deletes + 1)
        forced, normal = victims[:1], victims[1:]
        ids = {m.key: soak.webhook_id(m) for m in forced}
        world.pause_operator()
        try:
            world.cp.restart()
            for member in normal:
                soak.delete(member)
            for member in forced:
                soak.delete(member, force=True)
        finally:
            world.resume_operator()
        soak.note(
            f"apiserver restarted with the operator paused; deleted {len(normal)}, "
            f"force-deleted {len(forced)} in the gap"
        )

        def gone() -> bool:
            return all(world.hooks(m.ns).get(m.name) is None for m in normal)

        try:
            wait_for(gone, timeout=self.seen_deadline, interval=0.5, message="gap's deletions")
        except AssertionError:
            soak.note(f"the gap's deletions not done within {self.seen_deadline:g}s")
        for member in forced:
            if ids[member.key]:
                soak.adopt(member, str(ids[member.key]))


class _Receiver:
    """A receiver that accepts everything (204); signatures are the receiver's business."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/blooio"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/blooio"  # nothing listens: connection refused


class ReceiverDown(FaultClass):
    rounds: int = 6  # deliveries to every resource during the hour
    rotate_share: float = 0.1

    def __post_init__(self) -> None:
        self.receiver: _Receiver | None = None
        self.down_url = ""

    def prepare(self, soak: Soak) -> None:
        self.receiver = _Receiver()
        self.down_url = closed_port_url()
        soak.deliver_all(self.receiver.url)  # healthy before the episode

    def actions(self, soak: Soak) -> list[Action]:
        out: list[Action] = [
            (i / self.rounds, "deliveries to the dead receiver", lambda: self.down(soak))
            for i in range(self.rounds)
        ]
        out.append((0.4, "rotations", lambda: self.rotate(soak)))
        return out

    def down(self, soak: Soak) -> None:
        soak.deliver_all(self.down_url)

    def rotate(self, soak: Soak) -> None:
        members = soak.pick(max(1, round(self.rotate_share * soak.config.resources)))
        for member in members:
            soak.rotate(member)
        soak.note(f"rotated {len(members)} secrets with the receiver down")

    def off(self, soak: Soak) -> None:
        assert self.receiver is not None
        soak.deliver_all(self.receiver.url)

    def problems(self, soak: Soak) -> list[FleetProblem]:
        out = []
        for obj in soak.objects():
            member = soak.member_of(obj)
            if member is None or member.deleted:
                continue
            conds = (obj.get("status") or {}).get("conditions", [])
            health = next((c for c in conds if c["type"] == "DeliveriesHealthy"), None)
            if health is None or health["status"] != "True":
                detail = f"{health['reason']}: {health.get('message', '')}" if health else "none"
                out.append(FleetProblem("deliveries unhealthy", member.label, detail[:200]))
        return out

    def cleanup(self, soak: Soak) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None


def fault_classes() -> dict[str, FaultClass]:
    return {
        "a": BlooioFault("a", "503 everywhere", rule={"kind": "error", "status": 503}),
        "b": BlooioFault("b", "hangs (timeouts)", rule={"kind": "hang"}),
        "c": BlooioFault("c", "429 + Retry-After", rule={"kind": "rate_limit"}),
        "d": KeyRevoked("d", "key revoked"),
        "e": ApiserverGaps("e", "apiserver gaps"),
        "f": ReceiverDown("f", "receiver down"),
    }
