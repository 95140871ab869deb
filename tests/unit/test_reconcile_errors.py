"""classify(): every error the reconcile layer can see maps to one retry semantic."""

from __future__ import annotations

import pytest

from blooio_operator.blooio import (
    ApiConnectionError,
    ApiStatusError,
    ApiTimeout,
    BadRequest,
    BlooioError,
    Conflict,
    CreateOutcomeUnknown,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    ValidationFailed,
)
from blooio_operator.kube import KubeConflict, KubeError, KubeForbidden, KubeNotFound
from blooio_operator.models import reasons
from blooio_operator.reconcile.errors import (
    CredentialsFailure,
    PermanentFailure,
    ReconcileError,
    TransientFailure,
    classify,
)
from tests.unit.fakes import make_settings

SETTINGS = make_settings(
    credentials_retry_seconds=300.0,
    transient_retry_base_seconds=1.0,
    transient_retry_cap_seconds=60.0,
    recovery_delay_seconds=3.0,
)


def _classify(exc: Exception, attempt: int = 0) -> ReconcileError:
    return classify(exc, settings=SETTINGS, attempt=attempt, action="create")


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (
            ValidationFailed(code="invalid_url", message="url must be https"),
            PermanentFailure,
            reasons.VALIDATION_FAILED,
        ),
        (BadRequest(message="malformed"), PermanentFailure, reasons.BAD_REQUEST),
        (Unauthorized(message="Invalid API key"), CredentialsFailure, reasons.CREDENTIALS_INVALID),
        (Forbidden(message="plan"), CredentialsFailure, reasons.CREDENTIALS_INVALID),
        (RateLimited(message="slow down", retry_after=5.0), TransientFailure, reasons.RATE_LIMITED),
        (CreateOutcomeUnknown("read timeout"), TransientFailure, reasons.OUTCOME_UNKNOWN),
        (NotFound(message="gone"), TransientFailure, reasons.REMOTE_ERROR),
        (Conflict(message="cap"), TransientFailure, reasons.REMOTE_ERROR),
        (ServerError(503, message="unavailable"), TransientFailure, reasons.REMOTE_ERROR),
        (UnexpectedResponse(200, message="bad body"), TransientFailure, reasons.REMOTE_ERROR),
        (ApiStatusError(418, message="teapot"), TransientFailure, reasons.REMOTE_ERROR),
        (ApiConnectionError("connection refused"), TransientFailure, reasons.REMOTE_ERROR),
        (ApiTimeout("read timeout"), TransientFailure, reasons.REMOTE_ERROR),
        (BlooioError("something"), TransientFailure, reasons.REMOTE_ERROR),
        (KubeForbidden(403, "Forbidden", "patch Secret"), CredentialsFailure, reasons.REMOTE_ERROR),
        (KubeNotFound(404, "NotFound", "patch status"), TransientFailure, reasons.REMOTE_ERROR),
        (KubeConflict(409, "Conflict", "create Secret"), TransientFailure, reasons.REMOTE_ERROR),
        (KubeError(500, "InternalError", "read Secret"), TransientFailure, reasons.REMOTE_ERROR),
        (RuntimeError("boom"), TransientFailure, reasons.REMOTE_ERROR),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_classify_maps_every_error_class(exc: Exception, kind: type, reason: str) -> None:
    err = _classify(exc)
    assert type(err) is kind
    assert err.reason == reason
    assert err.message
    assert str(err) == err.message


def test_validation_failure_carries_blooios_message_and_says_no_retry() -> None:
    err = _classify(ValidationFailed(code="invalid_event_type", message="message.bogus is unknown"))
    assert "message.bogus is unknown" in err.message
    assert "will not retry" in err.message
    assert err.warning


def test_validation_failure_without_a_message_falls_back_to_the_code() -> None:
    err = _classify(ValidationFailed(code="invalid_url", message=""))
    # ApiStatusError turns an empty message into "HTTP 422"; either is informative.
    assert "HTTP 422" in err.message or "invalid_url" in err.message


def test_credentials_failures_retry_slowly() -> None:
    for exc in (
        Unauthorized(message="bad key"),
        Forbidden(message="no"),
        KubeForbidden(403, "Forbidden", "read Secret"),
    ):
        err = _classify(exc)
        assert isinstance(err, CredentialsFailure)
        assert err.delay == SETTINGS.credentials_retry_seconds


@pytest.mark.parametrize("attempt", [0, 1, 3, 10, 40])
def test_transient_delay_is_within_retry_after_and_cap(attempt: int) -> None:
    for _ in range(50):
        err = _classify(ServerError(503, message="down", retry_after=2.0), attempt)
        assert isinstance(err, TransientFailure)
        assert 2.0 <= err.delay <= SETTINGS.transient_retry_cap_seconds


def test_rate_limited_never_retries_sooner_than_retry_after() -> None:
    for attempt in range(8):
        err = _classify(RateLimited(message="slow", retry_after=30.0), attempt)
        assert isinstance(err, TransientFailure)
        assert err.delay >= 30.0


def test_retry_after_beyond_the_cap_is_still_honoured() -> None:
    err = _classify(RateLimited(message="slow", retry_after=120.0))
    assert isinstance(err, TransientFailure)
    assert err.delay == 120.0


def test_backoff_ceiling_grows_with_attempts_and_stops_at_the_cap() -> None:
    first = [_classify(ApiTimeout("t"), 0).delay for _ in range(200)]
    late = [_classify(ApiTimeout("t"), 30).delay for _ in range(200)]
    assert max(first) <= SETTINGS.transient_retry_base_seconds
    assert max(late) <= SETTINGS.transient_retry_cap_seconds
    assert max(late) > SETTINGS.transient_retry_base_seconds  # full jitter over a wide range


def test_outcome_unknown_waits_at_least_the_recovery_delay() -> None:
    for _ in range(50):
        err = _classify(CreateOutcomeUnknown("lost response"))
        assert isinstance(err, TransientFailure)
        assert err.delay >= SETTINGS.recovery_delay_seconds
        assert "look for the webhook" in err.message


def test_reconcile_errors_pass_through_unchanged() -> None:
    original = PermanentFailure(reasons.AMBIGUOUS_RECOVERY, "pick one")
    assert _classify(original) is original


def test_unexpected_exceptions_do_not_leak_their_text() -> None:
    err = _classify(RuntimeError("whsec_should_not_be_shown"))
    assert "whsec_should_not_be_shown" not in err.message
    assert "RuntimeError" in err.message


def test_transient_failures_are_not_warnings() -> None:
    assert not _classify(ServerError(500, message="x")).warning
    assert _classify(Unauthorized(message="x")).warning
    assert _classify(BadRequest(message="x")).warning
