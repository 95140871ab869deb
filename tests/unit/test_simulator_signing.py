"""``X-Blooio-Signature`` signing and verification, held to the documented test vector."""

from __future__ import annotations

import pytest

from blooio_operator.simulator.signing import (
    parse_signature_header,
    sign,
    signature_hex,
    verify,
)

# blooio-api.md §4 test vector.
SECRET = "whsec_test_secret"
TIMESTAMP = 1700000000
BODY = b'{"id":"evt_123","type":"message.received"}'
V1 = "f4544645bd4887571db0b498c3ad114c3316b8225d8a3df45664143ca6fd942b"


def test_sign_matches_the_test_vector() -> None:
    assert signature_hex(SECRET, TIMESTAMP, BODY) == V1
    assert sign(SECRET, TIMESTAMP, BODY) == f"t={TIMESTAMP},v1={V1}"


def test_verify_accepts_the_test_vector() -> None:
    assert verify(SECRET, f"t={TIMESTAMP},v1={V1}", BODY, now=TIMESTAMP)
    assert verify(SECRET, f"t={TIMESTAMP},v1={V1}", BODY, tolerance=None)
    assert verify(SECRET, f"t={TIMESTAMP}, v1={V1.upper()}", BODY, now=TIMESTAMP + 299)


@pytest.mark.parametrize(
    ("secret", "header", "body"),
    [
        ("whsec_other", f"t={TIMESTAMP},v1={V1}", BODY),
        (SECRET, f"t={TIMESTAMP},v1={V1}", BODY + b" "),
        (SECRET, f"t={TIMESTAMP + 1},v1={V1}", BODY),
        (SECRET, f"v1={V1}", BODY),
        (SECRET, f"t=abc,v1={V1}", BODY),
        (SECRET, f"t={TIMESTAMP}", BODY),
        (SECRET, f"t={TIMESTAMP},v0={V1}", BODY),
        (SECRET, "", BODY),
        ("test_secret", f"t={TIMESTAMP},v1={V1}", BODY),  # prefix is part of the key
    ],
)
def test_verify_rejects(secret: str, header: str, body: bytes) -> None:
    assert not verify(secret, header, body, now=TIMESTAMP)


def test_tolerance_applies_in_both_directions() -> None:
    header = sign(SECRET, TIMESTAMP, BODY)
    assert not verify(SECRET, header, BODY, now=TIMESTAMP + 301)
    assert not verify(SECRET, header, BODY, now=TIMESTAMP - 301)
    assert verify(SECRET, header, BODY, now=TIMESTAMP + 301, tolerance=400)


def test_any_of_several_v1_values_may_match() -> None:
    header = f"t={TIMESTAMP},v1={'0' * 64},v1={V1},v2=whatever"
    assert parse_signature_header(header) == (TIMESTAMP, ["0" * 64, V1])
    assert verify(SECRET, header, BODY, now=TIMESTAMP)
