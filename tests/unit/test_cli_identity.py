"""The operator's kopf identity never needs a passwd entry (uid 65532 under containerd)."""

from __future__ import annotations

import getpass
import os

import pytest

from blooio_operator import cli


def test_identity_without_a_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_ID", raising=False)
    monkeypatch.delenv("POD_NAME", raising=False)

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert cli._identity().startswith(f"{os.getuid()}@")


def test_identity_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "blooio-operator-7d9c-abcde")
    assert cli._identity() == "blooio-operator-7d9c-abcde"
