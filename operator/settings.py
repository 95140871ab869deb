"""Operator settings, from the environment (prefix ``BLOOIO_``), built once at startup.

Passed down through kopf's ``memo``; never a module-level singleton.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOOIO_", extra="ignore")

    api_key: SecretStr | None = Field(
        default=None, description="Operator-wide default Blooio API key."
    )
    api_url: str = Field(default="https://api.blooio.com/v4", description="Blooio V4 base URL.")
    default_key_namespaces: str = Field(
        default="*",
        description="Comma-separated namespace globs whose resources may use the default key "
        "(resources elsewhere need spec.credentialsRef); empty: no namespace may.",
    )
    credentials_require_label: bool = Field(
        default=True,
        description="A Secret named by spec.credentialsRef must carry the label "
        "blooio.com/credentials=true (its owner's consent to be used as a Blooio key).",
    )
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    max_concurrency_per_key: int = Field(default=16, ge=1)
    rate_per_key: float = Field(default=200.0, gt=0, description="Requests per second per key.")
    kube_threads: int = Field(
        default=32, ge=1, description="Threads for Kubernetes API calls (the client is blocking)."
    )
    max_workers: int = Field(
        default=50,
        ge=1,
        description="Resources worked on at once (our own bound, not kopf's worker limit).",
    )
    worker_idle_seconds: float = Field(
        default=0.05,
        gt=0,
        description="How long a resource's kopf worker outlives its last event (holding a slot).",
    )
    drift_interval_seconds: float = Field(default=600.0, gt=0)
    secret_check_interval_seconds: float = Field(default=60.0, gt=0)
    credentials_retry_seconds: float = Field(
        default=300.0, gt=0, description="Retry period while credentials are missing/invalid."
    )
    transient_retry_base_seconds: float = Field(default=1.0, gt=0)
    transient_retry_cap_seconds: float = Field(default=300.0, gt=0)
    recovery_delay_seconds: float = Field(
        default=3.0,
        ge=0,
        description="Wait after a create whose outcome is unknown before listing to recover.",
    )
    deliveries_health_interval_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Delivery health: one GET /webhooks/{id}/deliveries per resource per "
        "interval, spread over it (0 = off).",
    )
    deliveries_health_pages: int = Field(
        default=1, ge=1, le=50, description="Pages (of 200) one health check reads at most."
    )
    replay_grace_seconds: float = Field(
        default=90.0,
        ge=0,
        description="After a signing-secret change, wait this long (the kubelet's refresh of "
        "a mounted Secret) before looking for deliveries the receiver rejected.",
    )
    replay_window_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long after a signing-secret change (or a replay request) replays "
        "are retried before giving up (0 = no replays after rotations).",
    )
    replay_probe_delay_seconds: float = Field(
        default=15.0, gt=0, description="How long after a replay its outcome is checked."
    )
    replay_pages: int = Field(
        default=10, ge=1, le=100, description="Pages (of 200) a replay decision reads at most."
    )
    replay_max_deliveries: int = Field(
        default=500, ge=1, description="Deliveries replayed at most per rotation or request."
    )
    metrics_port: int | None = None
    metrics_auth: bool = Field(
        default=True,
        description="/metrics requires a bearer token that may get the non-resource URL "
        "/metrics (TokenReview + SubjectAccessReview); false: open to whoever reaches the port.",
    )
    metrics_resource_readiness: bool = Field(
        default=True,
        description="Export blooio_operator_resource_ready: one series per resource.",
    )
    metrics_delivery_detail: bool = Field(
        default=False,
        description="Export the per-resource delivery series (four per resource).",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector (e.g. blooio.com/shard=a): serve only the BlooioWebhooks "
        "it matches, filtered by the API server. One shard per selector, each its own "
        "Deployment and Lease name.",
    )
    leader_elect: bool = Field(
        default=False,
        description="Run only while holding the Lease (coordination.k8s.io); a standby waits. "
        "Off for a plain process; on in the shipped Deployment (--leader-elect).",
    )
    leader_election_namespace: str | None = Field(
        default=None,
        description="Namespace of the Lease; default POD_NAMESPACE (the downward API), then "
        "the in-cluster service account's namespace.",
    )
    leader_election_lease_name: str = Field(
        default="blooio-operator",
        min_length=1,
        max_length=253,
        description="Name of the Lease: one per operator instance (each shard its own).",
    )
    lease_duration_seconds: float = Field(
        default=15.0,
        ge=1,
        description="How long a standby waits after the last renewal it saw before taking "
        "the Lease over.",
    )
    lease_renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A leader that has not renewed for this long stops at once (no Blooio call, "
        "no Kubernetes write) and exits; shorter than the lease duration.",
    )
    lease_retry_period_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the leader renews and a standby tries to acquire.",
    )
    claim_key: SecretStr | None = Field(
        default=None,
        description="Key of the seal over the webhook ids and intents in status (any "
        "random string of 32+ characters, the same for every replica); default: derived "
        "from the default API key.",
    )
    claim_key_previous: SecretStr | None = Field(
        default=None,
        description="The claim key before a rotation: claims sealed with it still verify "
        "and are resealed with the current key.",
    )
    crash_point: str | None = Field(
        default=None, description="Testing only: SIGKILL the process at this step boundary."
    )

    @model_validator(mode="after")
    def _lease_timings(self) -> Settings:
        # The margin between the two is what keeps a leader that stopped renewing from
        # overlapping with the next one (docs/design.md, "High availability").
        if self.lease_renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError(
                "BLOOIO_LEASE_RENEW_DEADLINE_SECONDS must be shorter than "
                "BLOOIO_LEASE_DURATION_SECONDS"
            )
        if self.lease_retry_period_seconds >= self.lease_renew_deadline_seconds:
            raise ValueError(
                "BLOOIO_LEASE_RETRY_PERIOD_SECONDS must be shorter than "
                "BLOOIO_LEASE_RENEW_DEADLINE_SECONDS"
            )
        return self
