"""Cheap password hashing for these tests: they check who may sign in, not argon2's cost
(RFC 9106's defaults take half a second per hash on a busy 2-core machine)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from hq_server.operators import accounts


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch):
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", cheap)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", cheap.hash("not a password of anyone"))
