"""The one place where retry semantics are decided.

Every failure the reconcile layer sees becomes one of three outcomes:

* ``PermanentFailure`` — a human must change something in the spec (Blooio 400/422, an
  ambiguous recovery, a Kubernetes 422 on a write of ours): ``Stalled=True``, a Warning
  Event, no retry until the spec or an annotation changes.
* ``CredentialsFailure`` — missing or rejected API key, or a Secret we may not
  overwrite: ``Stalled=True`` and a slow retry, so a fixed key is picked up without
  editing the resource.
* ``TransientFailure`` — 429, 5xx, timeouts, connection errors, Kubernetes hiccups:
  ``Reconciling=True`` and a retry after capped exponential backoff with full jitter,
  never sooner than ``Retry-After``.
"""

from __future__ import annotations

from blooio_operator.blooio import (
    ApiConnectionError,
    ApiStatusError,
    BadRequest,
    BlooioError,
    Conflict,
    CreateOutcomeUnknown,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
    backoff_delay,
)
from blooio_operator.kube import KubeError, KubeForbidden
from blooio_operator.kube.client import KubeInvalid
from blooio_operator.models import reasons
from blooio_operator.settings import Settings


class ReconcileError(Exception):
    """A reconcile outcome that is not success; ``message`` is shown to users."""

    warning = True

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PermanentFailure(ReconcileError):
    pass


class CredentialsFailure(ReconcileError):
    def __init__(self, reason: str, message: str, *, delay: float) -> None:
        super().__init__(reason, message)
        self.delay = delay


class TransientFailure(ReconcileError):
    warning = False

    def __init__(self, reason: str, message: str, *, delay: float) -> None:
        super().__init__(reason, message)
        self.delay = delay


def transient_delay(settings: Settings, attempt: int, retry_after: float | None = None) -> float:
    return backoff_delay(
        attempt,
        base=settings.transient_retry_base_seconds,
        cap=settings.transient_retry_cap_seconds,
        retry_after=retry_after,
    )


def _blooio_message(exc: ApiStatusError) -> str:
    return exc.message or exc.code or f"HTTP {exc.status}"


def classify(exc: Exception, *, settings: Settings, attempt: int, action: str) -> ReconcileError:
    """Map any exception from the client or kube layer to a reconcile outcome."""
    if isinstance(exc, ReconcileError):
        return exc
    if isinstance(exc, ValidationFailed):
        return PermanentFailure(
            reasons.VALIDATION_FAILED,
            f"Blooio rejected the webhook ({action}): {_blooio_message(exc)}. "
            "Fix the spec; the operator will not retry until it changes.",
        )
    if isinstance(exc, BadRequest):
        return PermanentFailure(
            reasons.BAD_REQUEST,
            f"Blooio answered 400 to {action}: {_blooio_message(exc)}. "
            "Fix the spec; the operator will not retry until it changes.",
        )
    if isinstance(exc, Unauthorized | Forbidden):
        return CredentialsFailure(
            reasons.CREDENTIALS_INVALID,
            f"Blooio rejected the API key ({exc.status}) during {action}; fix the key in "
            "the credentials Secret, it is picked up on the next retry.",
            delay=settings.credentials_retry_seconds,
        )
    if isinstance(exc, RateLimited):
        return TransientFailure(
            reasons.RATE_LIMITED,
            f"Blooio rate-limited {action}; retrying.",
            delay=transient_delay(settings, attempt, exc.retry_after),
        )
    if isinstance(exc, CreateOutcomeUnknown):
        return TransientFailure(
            reasons.OUTCOME_UNKNOWN,
            f"{action}: the outcome is unknown ({exc}); the operator will look for the "
            "webhook at Blooio before creating again.",
            delay=max(settings.recovery_delay_seconds, transient_delay(settings, attempt)),
        )
    if isinstance(exc, NotFound | Conflict | ApiStatusError):
        retry_after = exc.retry_after if isinstance(exc, ApiStatusError) else None
        return TransientFailure(
            reasons.REMOTE_ERROR,
            f"Blooio error during {action}: {exc}; retrying.",
            delay=transient_delay(settings, attempt, retry_after),
        )
    if isinstance(exc, ApiConnectionError | BlooioError):
        return TransientFailure(
            reasons.REMOTE_ERROR,
            f"Blooio unreachable during {action}: {exc}; retrying.",
            delay=transient_delay(settings, attempt),
        )
    if isinstance(exc, KubeInvalid):
        # Retrying cannot help, and a retry after a create would recover and rotate
        # again each time: what we write follows from the spec, so the spec must change.
        return PermanentFailure(
            reasons.WRITE_REJECTED,
            f"Kubernetes rejected {action} ({exc.status}): {exc.detail}. Fix the spec "
            "(e.g. spec.secret.labels or spec.secret.annotations); the operator will not "
            "retry until it changes.",
        )
    if isinstance(exc, KubeForbidden):
        return CredentialsFailure(
            reasons.REMOTE_ERROR,
            f"Kubernetes refused {action}: {exc}. Check the operator's RBAC.",
            delay=settings.credentials_retry_seconds,
        )
    if isinstance(exc, KubeError):
        return TransientFailure(
            reasons.REMOTE_ERROR,
            f"Kubernetes error during {action}: {exc}; retrying.",
            delay=transient_delay(settings, attempt),
        )
    return TransientFailure(
        reasons.REMOTE_ERROR,
        f"Unexpected {type(exc).__name__} during {action}; retrying.",
        delay=transient_delay(settings, attempt),
    )
