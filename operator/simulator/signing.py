"""Blooio delivery signatures: the ``X-Blooio-Signature`` header, made and checked.

Owns the one definition of the signing scheme the simulator uses when it delivers
events (blooio-api.md §4): the header value is ``t=<unix seconds>,v1=<hex>`` where
``<hex>`` is the lowercase hex HMAC-SHA256 of ``f"{t}.".encode() + body``, keyed with
the signing secret string used verbatim (``whsec_`` prefix included).

This module is deliberately self-contained (standard library only) so that receivers and
tests can use it without the rest of the simulator.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Blooio-Signature"
"""The header the simulator sends. Receivers should also accept ``Blooio-Signature``."""

DEFAULT_TOLERANCE_SECONDS = 300
"""Receiver-side replay window recommended by the provider's guide (5 minutes)."""


def signature_hex(secret: str, timestamp: int, body: bytes) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``"<timestamp>." + body`` keyed by ``secret``."""
    message = f"{int(timestamp)}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Blooio-Signature`` header value: ``t=<timestamp>,v1=<hex>``."""
    return f"t={int(timestamp)},v1={signature_hex(secret, timestamp, body)}"


def parse_signature_header(header: str) -> tuple[int | None, list[str]]:
    """Split a signature header into its timestamp and every ``v1`` value.

    Unknown schemes and malformed parts are ignored; a missing or non-integer ``t``
    yields ``None``.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                timestamp = None
        elif key == "v1" and value:
            signatures.append(value.lower())
    return timestamp, signatures


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Return whether ``header`` is a valid signature of ``body`` under ``secret``.

    ``tolerance`` bounds ``|now - t|`` in seconds (``None`` disables the check);
    ``now`` defaults to the current time. Comparison is constant-time.
    """
    timestamp, signatures = parse_signature_header(header)
    if timestamp is None or not signatures:
        return False
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance:
            return False
    expected = signature_hex(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
