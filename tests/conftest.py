"""Shared fixtures: our own mosquitto, HQ databases, and the real-part rule.

The real-part rule: a test that needs a real component (mosquitto, pcscd, PostgreSQL,
...) skips when it is missing on a developer's machine, but FAILS under CI=true, so a
missing install step can never pass as green.
"""

from __future__ import annotations

import inspect
import os
import shutil
import socket
import subprocess
import uuid

import pytest
from hypothesis import settings as hypothesis_settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# --- Hypothesis: reproducible in CI, quick at a developer's desk, thorough in bench/ -----
# CI derandomizes (the same examples every run, so a red CI run is red again on a
# developer's machine); the profile in use is printed in the report header.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None,
                                     print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis_settings.register_profile("bench", deadline=None, max_examples=5000,
                                     print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev")
hypothesis_settings.load_profile(HYPOTHESIS_PROFILE)
#: ``make test-fast`` (ONECARD_FAST=1): property tests run a tenth of their examples (at
#: least 10), so the inner loop stays under a minute; ``make test`` runs them all.
FAST = os.environ.get("ONECARD_FAST", "") == "1"
FAST_DIVISOR = 10

# --- Real parts: markers set from what a test uses, and a guard that keeps them honest ---
#: marker → (fixtures that start the part, words in a test's source that start it).
REAL_PARTS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "broker": (frozenset({"broker_factory"}),
               ("broker_factory", "start_broker(", "make_fleet(", "Broker(", "mosquitto")),
    "postgres": (frozenset({"pg_url", "pg_base"}), ("pg_url", "postgres_url(")),
    "pcsc": (frozenset({"pcscd", "vpcd_pair"}), ("running_pcscd", "vpcd_lock", "pcscd")),
    "subprocess": (frozenset(), ("subprocess.", "Popen(", "sys.executable")),
    "network": (frozenset(), ("make_runtime(", "Runtime(", "uvicorn", "serve_api(",
                              "IngestWorker(", "FleetService(", "mqtt.Client(")),
}
#: Words in a parametrized test's id that name a real part.
PARAM_PARTS = {"postgresql": "postgres", "pcsc": "pcsc"}


def pytest_report_header(config: pytest.Config) -> str:
    return (f"hypothesis profile: {HYPOTHESIS_PROFILE}"
            + (" (derandomized: the same examples every run)"
               if HYPOTHESIS_PROFILE == "ci" else "")
            + (f"; fast loop: 1/{FAST_DIVISOR} of each property test's examples" if FAST else ""))


def _fewer_examples(item: pytest.Function) -> None:
    """In the fast loop, cut a property test's examples (its own @settings included)."""
    test = item.obj
    chosen = getattr(test, "_hypothesis_internal_use_settings", None)
    if chosen is not None and chosen.max_examples > 10:
        test._hypothesis_internal_use_settings = hypothesis_settings(
            chosen, max_examples=max(10, chosen.max_examples // FAST_DIVISOR))


def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _used_source(item: pytest.Function) -> str:
    """The test's own source, its module's fixtures it uses, and helpers it calls by name."""
    module = item.module
    own = _source(item.function)
    parts = [own]
    for name in item.fixturenames:
        fixture = getattr(module, name, None)
        if fixture is not None:
            parts.append(_source(getattr(fixture, "__wrapped__", fixture)))
    for name, value in vars(module).items():
        if inspect.isfunction(value) and value is not item.function and f"{name}(" in own:
            parts.append(_source(value))
    return "\n".join(parts)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the real parts it uses (``make test-fast`` runs the others)."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if FAST:
            _fewer_examples(item)
        have = {m.name for m in item.iter_markers()}
        text = _used_source(item)
        fixtures = set(item.fixturenames)
        for marker, (starters, words) in REAL_PARTS.items():
            if marker in have:
                continue
            if fixtures & starters or any(w in text for w in words):
                item.add_marker(getattr(pytest.mark, marker))
        callspec = getattr(item, "callspec", None)
        for word, marker in PARAM_PARTS.items():
            if callspec and marker not in have and word in callspec.id.split("-"):
                item.add_marker(getattr(pytest.mark, marker))


class RealPartWithoutMarker(AssertionError):
    """A test started a real part (network, subprocess) without carrying its marker."""


@pytest.fixture(autouse=True)
def _real_parts_only_when_marked(request: pytest.FixtureRequest, monkeypatch):
    """A test with no real-part marker may not open network sockets or start processes.

    This keeps ``make test-fast`` honest: a test that really needs mosquitto, PostgreSQL,
    pcscd or a subprocess fails here until it is marked (by a fixture it uses, a word in
    its source, or ``@pytest.mark.<part>``), instead of silently slowing the fast loop.
    """
    if any(request.node.get_closest_marker(m) for m in REAL_PARTS):
        yield
        return
    name = request.node.nodeid
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise RealPartWithoutMarker(
                f"{name} connects to {address!r} but carries no real-part marker "
                f"({', '.join(REAL_PARTS)})")
        return real_connect(sock, address, *args, **kwargs)

    def popen(*args, **kwargs):
        raise RealPartWithoutMarker(
            f"{name} starts a process ({args[1] if len(args) > 1 else kwargs.get('args')!r}) "
            f"but carries no 'subprocess' marker")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    yield


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
