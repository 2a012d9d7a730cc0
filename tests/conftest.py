"""Shared fixtures: our own mosquitto, HQ databases, and the real-part rule.

The real-part rule: a test that needs a real component (mosquitto, pcscd, PostgreSQL,
...) skips when it is missing on a developer's machine, but FAILS under CI=true, so a
missing install step can never pass as green.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when a real part is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"real part missing in CI: {what}")
    pytest.skip(f"real part missing: {what}")


def have_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None or os.path.exists("/usr/sbin/mosquitto")


def postgres_url() -> str | None:
    """URL of the PostgreSQL test server if it answers, else None."""
    url = os.environ.get("ONECARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return url
    except OSError:
        return None


@pytest.fixture
def broker_factory(tmp_path_factory):
    """Start mosquitto instances with OneCard's config; all are stopped at the end."""
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    from broker_config.runner import Broker

    started: list[Broker] = []

    def make(users: dict[str, str]) -> Broker:
        broker = Broker(users).start()
        started.append(broker)
        return broker

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'hq.db'}"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL schema for one test (dropped afterwards)."""
    url = postgres_url()
    require(url is not None, "PostgreSQL at 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{url}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
