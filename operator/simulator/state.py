"""In-memory state of the Blooio simulator: webhooks, deliveries, ids, cursors.

Owns the stored records and their wire rendering, id and secret generation, the opaque
pagination cursors, and per-organisation visibility. Nothing here does I/O; the server
module drives it. Tests reach it in-process as ``sim.state``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any, Final

ID_ALPHABET: Final = string.ascii_letters + string.digits
ID_LENGTH: Final = 24
SECRET_HEX_CHARS: Final = 48


def now_ms() -> int:
    """Current time as integer epoch milliseconds (the V4 timestamp unit)."""
    return time.time_ns() // 1_000_000


def api_key_fingerprint(api_key: str) -> str:
    """Short, stable, non-reversible label for an API key (``key_`` + 12 hex chars).

    The simulator shows this instead of the key in its admin API and logs.
    """
    return "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


class InvalidCursor(ValueError):
    """A ``cursor`` query value the simulator did not issue (rendered as HTTP 400)."""


def encode_cursor(kind: str, after_seq: int) -> str:
    """Opaque cursor: urlsafe base64 of ``"<kind>:<sequence number of the last item>"``."""
    return base64.urlsafe_b64encode(f"{kind}:{after_seq}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """Return the sequence number a cursor of ``kind`` points after."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
        cursor_kind, _, seq = raw.partition(":")
        value = int(seq)
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidCursor(cursor) from None
    if cursor_kind != kind or value < 0:
        raise InvalidCursor(cursor)
    return value


@dataclass
class DeliveryRecord:
    """One delivery attempt (original or replay) of an event to a webhook."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: bytes
    target_url: str
    status: str = "queued"
    attempt_count: int = 0
    response_status: int | None = None
    last_attempt_at: int | None = None
    next_attempt_at: int | None = None
    created_at: int = field(default_factory=now_ms)
    replay_of: str | None = None
    error: str | None = None
    target_overridden: bool = False
    seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The ``WebhookDelivery`` object as the V4 API returns it."""
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempt_count": self.attempt_count,
            "response_status": self.response_status,
            "last_attempt_at": self.last_attempt_at,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
        }

    def to_admin(self) -> dict[str, Any]:
        """Wire object plus simulator-only details (target, replay_of, error, body)."""
        return {
            **self.to_wire(),
            "replay_of": self.replay_of,
            "target_url": self.target_url,
            "error": self.error,
            "body": self.body.decode("utf-8", errors="replace"),
        }


@dataclass
class WebhookRecord:
    """A stored webhook subscription, including its current signing secret."""

    id: str
    org: str
    api_key_id: str
    url: str
    event_types: list[str]
    status: str
    channel_id: str | None
    channel_type: str | None
    created_at: int
    signing_secret: str
    seq: int
    deliveries: dict[str, DeliveryRecord] = field(default_factory=dict)
    previous_secrets: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        """The ``Webhook`` object as the V4 API returns it (never the secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "event_types": list(self.event_types),
            "status": self.status,
            "channel_id": self.channel_id,
            "channel_type": self.channel_type,
            "created_at": self.created_at,
        }

    def to_wire_with_secret(self) -> dict[str, Any]:
        """The ``WebhookWithSecret`` object returned once, by create."""
        return {**self.to_wire(), "signing_secret": self.signing_secret}

    def to_admin(self) -> dict[str, Any]:
        """Wire object plus the current secret and the owning key's fingerprint."""
        return {
            **self.to_wire_with_secret(),
            "api_key_id": self.api_key_id,
            "organization_id": self.org,
        }


class SimulatorState:
    """Every webhook of every organisation, plus id/secret generation.

    ``webhooks`` maps id -> record across organisations, in insertion order;
    ``for_org`` gives one organisation's view. Sequence numbers only grow, so cursors
    stay valid across inserts and deletes.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        # Ids and secrets come from a seeded generator when the simulator is seeded
        # (reproducible runs); otherwise from the OS.
        self._rng: random.Random = rng if rng is not None else random.SystemRandom()
        self.webhooks: dict[str, WebhookRecord] = {}
        self._by_org: dict[str, dict[str, WebhookRecord]] = {}
        self._seq = 0

    def clear(self) -> None:
        """Forget every webhook and delivery (sequence numbers keep growing)."""
        self.webhooks.clear()
        self._by_org.clear()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _random_alnum(self, length: int = ID_LENGTH) -> str:
        return "".join(self._rng.choice(ID_ALPHABET) for _ in range(length))

    def new_webhook_id(self) -> str:
        while True:
            candidate = "wh_" + self._random_alnum()
            if candidate not in self.webhooks:
                return candidate

    def new_delivery_id(self) -> str:
        return "wdel_" + self._random_alnum()

    def new_event_id(self) -> str:
        return "evt_" + self._random_alnum()

    def new_secret(self) -> str:
        return "whsec_" + f"{self._rng.getrandbits(SECRET_HEX_CHARS * 4):0{SECRET_HEX_CHARS}x}"

    def for_org(self, org: str) -> dict[str, WebhookRecord]:
        """One organisation's webhooks (id -> record, insertion order); may be empty."""
        return self._by_org.get(org, {})

    def get(self, webhook_id: str, org: str | None = None) -> WebhookRecord | None:
        """A webhook by id; with ``org``, only if that organisation owns it."""
        record = self.webhooks.get(webhook_id)
        if record is None or (org is not None and record.org != org):
            return None
        return record

    def add(self, record: WebhookRecord) -> None:
        self.webhooks[record.id] = record
        self._by_org.setdefault(record.org, {})[record.id] = record

    def remove(self, webhook_id: str) -> WebhookRecord | None:
        record = self.webhooks.pop(webhook_id, None)
        if record is not None:
            org_view = self._by_org.get(record.org)
            if org_view is not None:
                org_view.pop(webhook_id, None)
        return record

    def rotate(self, record: WebhookRecord) -> str:
        """Replace the signing secret; the old one stops verifying at once."""
        record.previous_secrets.append(record.signing_secret)
        record.signing_secret = self.new_secret()
        return record.signing_secret
