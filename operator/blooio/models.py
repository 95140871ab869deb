"""Pydantic models of the Blooio V4 webhooks wire objects (request bodies and responses).

Shapes follow the provider's OpenAPI export (/work/shared/reference). Response models
ignore unknown fields, so an additive change on Blooio's side (V4 is beta) does not break
the operator; request models forbid them, so a typo in our own code fails loudly.

Signing secrets are `SecretStr`: they print as `**********` in repr, logs and tracebacks;
call `.get_secret_value()` only where the bytes go into a Kubernetes Secret.

URLs stay plain strings: `HttpUrl` would normalise them (e.g. add a trailing slash) and
make the operator see drift that is not there. Blooio validates them (422).
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "CreateWebhookRequest",
    "ReplayResult",
    "RotatedSecret",
    "UpdateWebhookRequest",
    "Webhook",
    "WebhookDelivery",
    "WebhookStatus",
    "WebhookWithSecret",
]

WebhookStatus = Literal["active", "disabled"]


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_wire(self) -> dict[str, object]:
        """The JSON body: unset (None) fields are omitted, not sent as null."""
        return self.model_dump(mode="json", exclude_none=True)


class Webhook(_Response):
    """A webhook subscription as V4 returns it from list, get and update."""

    id: str
    url: str
    event_types: list[str]
    status: WebhookStatus
    channel_id: str | None = None
    channel_type: str | None = None
    created_at: int | None = Field(default=None, description="epoch milliseconds (inferred)")


class WebhookWithSecret(Webhook):
    """The create response: the only time Blooio returns the signing secret."""

    signing_secret: SecretStr


class RotatedSecret(_Response):
    """The rotate response: the webhook id and its new signing secret."""

    id: str
    signing_secret: SecretStr


class WebhookDelivery(_Response):
    """One delivery attempt record (`wdel_...`). Status values are not enumerated by Blooio."""

    id: str
    webhook_id: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    status: str | None = None
    attempt_count: int | None = None
    response_status: int | None = None
    last_attempt_at: int | None = None
    next_attempt_at: int | None = None
    created_at: int | None = None


class ReplayResult(_Response):
    """A queued replay: `id` of the new delivery, `replay_of` the original delivery."""

    id: str
    replay_of: str | None = None
    status: str | None = None


class CreateWebhookRequest(_Request):
    """Body of `POST /webhooks`. Omitted `event_types` means `["*"]` on Blooio's side."""

    url: str
    event_types: list[str] | None = None
    channel_id: str | None = None
    channel_type: str | None = None


class UpdateWebhookRequest(_Request):
    """Body of `PATCH /webhooks/{id}`; only the fields that are set are sent."""

    url: str | None = None
    event_types: list[str] | None = None
    status: WebhookStatus | None = None


_T = TypeVar("_T")


class DataEnvelope(_Response, Generic[_T]):
    """`{"data": ...}`, the V4 single-object envelope."""

    data: _T


class Page(_Response, Generic[_T]):
    """`{"data": [...], "has_more", "next_cursor"}`, the V4 list envelope."""

    data: list[_T]
    has_more: bool = False
    next_cursor: str | None = None
