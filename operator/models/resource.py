"""The BlooioWebhook spec and status as pydantic models (camelCase on the wire)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "blooio.com"
VERSION = "v1alpha1"
PLURAL = "blooiowebhooks"
KIND = "BlooioWebhook"

DeletionPolicy = Literal["Delete", "Orphan", "Disable"]
RemoteStatus = Literal["active", "disabled"]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class CredentialsRef(_Camel):
    name: str
    key: str = "api-key"


class SecretTemplate(_Camel):
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class WebhookSpec(_Camel):
    url: str
    event_types: list[str] = Field(default_factory=lambda: ["*"])
    channel_id: str | None = None
    channel_type: str | None = None
    credentials_ref: CredentialsRef | None = None
    secret: SecretTemplate = Field(default_factory=SecretTemplate)
    suspend: bool = False
    deletion_policy: DeletionPolicy = "Delete"

    def secret_name(self, resource_name: str) -> str:
        return self.secret.name or f"{resource_name}-blooio-webhook"

    @property
    def desired_remote_status(self) -> RemoteStatus:
        return "disabled" if self.suspend else "active"


class Applied(_Camel):
    """What the operator last applied to (or confirmed at) Blooio."""

    url: str
    event_types: list[str]
    channel_id: str | None = None
    channel_type: str | None = None


class Rotation(_Camel):
    """A signing-secret rotation sent (or about to be) whose answer is not yet in the Secret.

    Rotate mints a new secret per call: an earlier call answered late (or never, to us)
    can commit after a later one and leave the Secret stale. While this is recorded,
    no new rotation is sent before the earlier one can no longer commit.
    """

    webhook_id: str
    started_at: str


class Pending(_Camel):
    """An intent recorded before a non-idempotent call (create), for crash recovery."""

    operation: Literal["create", "replace"]
    started_at: str
    url: str
    # None in intents recorded before 0.3 (not matched on then).
    event_types: list[str] | None = None
    channel_id: str | None = None
    channel_type: str | None = None
    old_webhook_id: str | None = None


class Condition(_Camel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class NewestDelivery(_Camel):
    """The newest delivery a health check saw (no payload, ever)."""

    id: str
    at: str | None = None
    status: str | None = None
    response_code: int | None = None


class ReplayEpisode(_Camel):
    """Replays in progress, recorded before each replay is posted (crash-safe).

    ``rotation``: deliveries the receiver rejected (401/403) after a signing-secret
    change; ``request``: every failed delivery since ``blooio.com/replay-failed-since``.
    """

    trigger: Literal["rotation", "request"]
    since: str  # deliveries created at or after this are considered
    changed_at: str | None = None  # rotation: when the signing secret changed
    token: str | None = None  # request: the annotation value
    give_up_at: str
    phase: Literal["waiting", "probing", "replaying", "verifying"] = "waiting"
    started_at: str | None = None  # first replay posted (evidence of ours is newer)
    next_at: str | None = None
    probe_id: str | None = None  # the delivery replayed first, to see if it now succeeds
    probe_at: str | None = None  # its replay is (about to be) posted
    probe_replay_id: str | None = None
    attempts: int = 0  # probes that failed
    inflight: list[str] | None = None  # replays that may have been posted (intent)
    inflight_at: str | None = None
    posted: int = 0
    skipped: int = 0  # over the bound, or refused by Blooio
    refused: list[str] | None = None  # deliveries Blooio would not replay (e.g. 404)


class ReplayRecord(_Camel):
    """How the last replay episode ended."""

    trigger: Literal["rotation", "request"]
    since: str
    finished_at: str
    outcome: Literal["replayed", "gaveUp"]
    replayed: int = 0
    accepted: int = 0
    not_replayed: int = 0


class DeliveriesStatus(_Camel):
    """Delivery health (a compact summary, never payloads) and replay bookkeeping."""

    checked_at: str | None = None
    complete: bool | None = None  # every listed delivery was read within the page bound
    seen: int | None = None
    delivered: int | None = None
    failed: int | None = None
    pending: int | None = None
    newest: NewestDelivery | None = None
    last_delivered_at: str | None = None
    # The webhook the replay bookkeeping below refers to; another id in status.webhookId
    # means the webhook (and with it the signing secret) was replaced.
    webhook_id: str | None = None
    secret_change_at: str | None = None  # the last signing-secret change dealt with
    replay_token: str | None = None  # the last replay-failed-since value dealt with
    replay: ReplayEpisode | None = None
    last_replay: ReplayRecord | None = None


class WebhookStatus(_Camel):
    observed_generation: int | None = None
    webhook_id: str | None = None
    remote_status: RemoteStatus | None = None
    secret_name: str | None = None
    created_at: str | None = None
    last_synced_at: str | None = None
    secret_rotated_at: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    applied: Applied | None = None
    pending: Pending | None = None
    abandoned: list[Pending] | None = None
    rotate_token: str | None = None
    adopted_webhook_id: str | None = None
    # Fingerprint of the API key the webhook was created or adopted with (never the key).
    key_id: str | None = None
    rotating: Rotation | None = None
    deliveries: DeliveriesStatus | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        cond = self.condition(type_)
        return cond is not None and cond.status == "True"
