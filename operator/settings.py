"""Operator settings, from the environment (prefix ``BLOOIO_``), built once at startup.

Passed down through kopf's ``memo``; never a module-level singleton.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOOIO_", extra="ignore")

    api_key: SecretStr | None = Field(
        default=None, description="Operator-wide default Blooio API key."
    )
    api_url: str = Field(default="https://api.blooio.com/v4", description="Blooio V4 base URL.")
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
        description="Resources handled at once (kopf's worker limit); the rest wait their turn.",
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
    metrics_port: int | None = None
    crash_point: str | None = Field(
        default=None, description="Testing only: SIGKILL the process at this step boundary."
    )
