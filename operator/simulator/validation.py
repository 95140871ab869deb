"""Request validation rules of the simulated Blooio V4 webhooks API.

Owns the event catalogue (blooio-api.md §5), the subscription-token grammar, the channel
type enum, and the field checks behind every ``422 validation_error`` the simulator
returns. Each check raises :class:`FieldError`; the server turns it into the V4 error
envelope ``{"error": {"code": "validation_error", "message", "details": {"field"}}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

EVENT_TYPES: Final[tuple[str, ...]] = (
    "message.received",
    "message.queued",
    "message.pending",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.read",
    "message.reaction",
    "poll.created",
    "poll.received",
    "poll.voted",
    "group.name_changed",
    "group.icon_changed",
    "contact.shared",
    "contact.merged",
    "typing.started",
    "typing.stopped",
    "safety.state_changed",
    "safety.number_banned",
)
"""Every concrete event type of the newest V4 export (``x-blooio-webhook-event-types``)."""

CATEGORY_WILDCARDS: Final[frozenset[str]] = frozenset(
    {"message.*", "poll.*", "group.*", "typing.*", "safety.*"}
)
"""Category wildcards the export lists; ``contact.*`` is deliberately absent."""

LEGACY_BUCKETS: Final[Mapping[str, frozenset[str]]] = {
    "all": frozenset(EVENT_TYPES),
    "message": frozenset(t for t in EVENT_TYPES if t.startswith("message.")),
    "status": frozenset({"message.sent", "message.delivered", "message.failed", "message.read"}),
}
"""V2 coarse buckets. Their exact expansion is undocumented; this is the simulator's guess."""

SUBSCRIPTION_TOKENS: Final[frozenset[str]] = frozenset(
    {*EVENT_TYPES, *CATEGORY_WILDCARDS, "*", *LEGACY_BUCKETS}
)

CHANNEL_TYPES: Final[tuple[str, ...]] = (
    "blooio",
    "twilio",
    "whatsapp",
    "whatsapp_business",
    "rcs_business",
)
"""The ``ChannelType`` enum of the export (``amb`` from the rendered page is not in it)."""

WEBHOOK_STATUSES: Final[tuple[str, ...]] = ("active", "disabled")

MAX_URL_LENGTH: Final = 2048

DEFAULT_CHANNELS: Final[Mapping[str, str]] = {
    "ch_a1b2c3d4": "blooio",
    "ch_e5f6a7b8": "whatsapp",
}


class FieldError(Exception):
    """A request field failed validation (rendered as HTTP 422)."""

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.details: dict[str, Any] = {"field": field, **details}


def validate_url(value: object, field: str = "url") -> str:
    """Return ``value`` if it is an absolute ``https`` URL of at most 2048 characters."""
    if not isinstance(value, str):
        raise FieldError(field, f"{field} must be a string")
    if not value:
        raise FieldError(field, f"{field} must not be empty")
    if len(value) > MAX_URL_LENGTH:
        raise FieldError(
            field, f"{field} must be at most {MAX_URL_LENGTH} characters", max=MAX_URL_LENGTH
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise FieldError(field, f"{field} is not a valid URL")
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise FieldError(field, f"{field} is not a valid URL") from None
    if not parts.scheme or not parts.netloc:
        raise FieldError(field, f"{field} is not a valid absolute URL")
    if parts.scheme.lower() != "https":
        raise FieldError(field, f"{field} must use https")
    if not hostname:
        raise FieldError(field, f"{field} must include a host")
    return value


def validate_event_types(value: object, field: str = "event_types") -> list[str]:
    """Return ``value`` as sent if it is a non-empty list of known subscription tokens.

    Tokens are case-sensitive; duplicates are accepted and kept.
    """
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise FieldError(field, f"{field} must be a list of strings")
    if not value:
        raise FieldError(field, f"{field} must not be empty")
    for token in value:
        if token not in SUBSCRIPTION_TOKENS:
            raise FieldError(field, f"unknown event type or token: {token!r}", value=token)
    return list(value)


def validate_status(value: object, field: str = "status") -> str:
    """Return ``value`` if it is ``active`` or ``disabled``."""
    if not isinstance(value, str) or value not in WEBHOOK_STATUSES:
        raise FieldError(field, f"{field} must be one of: {', '.join(WEBHOOK_STATUSES)}")
    return value


def validate_channel(
    channel_id: object, channel_type: object, channels: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """Check ``channel_id`` / ``channel_type`` on create against the known channels.

    ``None`` means "not supplied". ``channel_type`` must be in the export's enum;
    ``channel_id`` must name a known channel, and when both are given the type must be
    that channel's type. Both are returned as sent (no type is derived from the id).
    """
    if channel_type is not None and (
        not isinstance(channel_type, str) or channel_type not in CHANNEL_TYPES
    ):
        raise FieldError("channel_type", f"channel_type must be one of: {', '.join(CHANNEL_TYPES)}")
    if channel_id is not None:
        if not isinstance(channel_id, str):
            raise FieldError("channel_id", "channel_id must be a string")
        known_type = channels.get(channel_id)
        if known_type is None:
            raise FieldError("channel_id", f"unknown channel: {channel_id!r}")
        if channel_type is not None and channel_type != known_type:
            raise FieldError(
                "channel_type",
                f"channel_type {channel_type!r} does not match channel {channel_id!r} "
                f"(type {known_type!r})",
            )
    return channel_id, channel_type


def expand_tokens(tokens: list[str]) -> frozenset[str]:
    """Return the concrete event types a subscription list matches."""
    matched: set[str] = set()
    for token in tokens:
        if token == "*":
            return frozenset(EVENT_TYPES)
        if token in LEGACY_BUCKETS:
            matched |= LEGACY_BUCKETS[token]
        elif token in CATEGORY_WILDCARDS:
            prefix = token[:-1]
            matched.update(t for t in EVENT_TYPES if t.startswith(prefix))
        elif token in EVENT_TYPES:
            matched.add(token)
    return frozenset(matched)


def subscription_matches(tokens: list[str], event_type: str) -> bool:
    """Return whether a webhook subscribed with ``tokens`` receives ``event_type``."""
    return event_type in expand_tokens(tokens)
