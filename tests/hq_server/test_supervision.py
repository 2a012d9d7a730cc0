"""A dying HQ thread is restarted with its reason logged, or takes the process down; and
`onecard hq status` / GET /health say so, read from another process's health rows."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import update

from hq_server.api.app import create_app
from hq_server.db.engine import open_engine
from hq_server.db.tables import component_health
from hq_server.devices.enrolment import BrokerAddress
from hq_server.ingest.worker import IngestWorker
from hq_server.process.supervision import EXIT_FAILED, Component, Supervisor, hq_health
from onecard.cli import main
from tests.fleet import wait_for


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


class Flaky:
    """A component's work that dies ``deaths`` times, then runs until stopped."""

    def __init__(self, deaths: int, stop: threading.Event) -> None:
        self.deaths, self.stop, self.runs = deaths, stop, 0

    def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.deaths:
            raise OSError(f"socket gone (run {self.runs})")
        self.stop.wait()


def by_component(health: dict) -> dict[str, dict]:
    return {c["component"]: c for c in health["components"]}


def test_a_dying_thread_is_restarted_with_its_reason_logged_and_reported(db_url, caplog):
    engine = open_engine(db_url)
    sup = Supervisor("hq-test-1", engine=engine, beat_every=0.1, backoff_s=0.01)
    flaky = Flaky(2, sup.stopping)
    sup.add(Component("ingest-commit", flaky, progress=lambda: {"batches_waiting": 3}))
    sup.start()
    try:
        wait_for(lambda: flaky.runs == 3 and sup.health()["ingest-commit"]["state"] == "running",
                 30, "two restarts")
        wait_for(lambda: by_component(hq_health(engine)).get("ingest-commit", {})
                 .get("restarts") == 2 and hq_health(engine)["ok"], 30, "the health row")
        row = by_component(hq_health(engine))["ingest-commit"]
        assert row["status"] == "alive" and "socket gone (run 2)" in row["last_error"]
        assert row["progress"] == {"batches_waiting": 3} and hq_health(engine)["ok"]
        assert any("ingest-commit died" in r.getMessage() and "socket gone" in r.getMessage()
                   for r in caplog.records)
        assert any("restarting HQ component ingest-commit" in r.getMessage()
                   for r in caplog.records)
        assert not sup.failed.is_set()
    finally:
        sup.stop()
        sup.join()
    assert by_component(hq_health(engine))["ingest-commit"]["status"] == "stopped"
    assert not hq_health(engine)["ok"]  # nothing running any more


def test_a_crash_loop_takes_the_process_down_with_a_non_zero_status():
    sup = Supervisor("hq-test-2", max_restarts=3, window_s=60, backoff_s=0.0)
    sup.add(Component("ingest-check", Flaky(10**6, threading.Event())))
    sup.start()
    assert sup.wait() == EXIT_FAILED
    assert "ingest-check died 4 times" in sup.failure and "socket gone" in sup.failure
    assert sup.health()["ingest-check"]["state"] == "failed"
    sup.stop()
    sup.join()


def test_a_component_that_must_not_restart_fails_at_its_first_death():
    sup = Supervisor("hq-test-3", backoff_s=0.0)
    keep = Flaky(0, sup.stopping)
    sup.add(Component("ledger-writer", Flaky(1, sup.stopping), restart=False))
    sup.add(Component("fleet", keep))
    sup.start()
    assert sup.wait() == EXIT_FAILED and sup.failure.startswith("ledger-writer does not restart")
    sup.stop()
    sup.join()


@pytest.mark.slow  # waits out the supervisor's restart budget (about 10 s)
def test_a_thread_returning_while_hq_runs_counts_as_a_death():
    sup = Supervisor("hq-test-4", max_restarts=0, backoff_s=0.0)
    sup.add(Component("ingest-side", lambda: None))
    sup.start()
    assert sup.wait() == EXIT_FAILED and "returned while HQ was running" in sup.failure
    sup.join()


def test_the_ingest_worker_restarts_a_dead_pipeline_stage(sqlite_url, caplog):
    engine = open_engine(sqlite_url)
    worker = IngestWorker(engine, host="127.0.0.1", port=1, username="hq", password="x",
                          reconcile_every=None, rerequest_every=None, denylist_every=None)
    real = worker._take_presence
    calls = {"n": 0}

    def dies_once() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("presence queue exploded")
        real()

    worker._take_presence = dies_once
    worker.start()
    try:
        wait_for(lambda: worker.supervisor.health()["ingest-commit"]["restarts"] == 1
                 and calls["n"] > 2, 30, "the commit stage restarted and looping")
        health = worker.supervisor.health()
        assert "MemoryError: presence queue exploded" in health["ingest-commit"]["last_error"]
        assert {h["state"] for h in health.values()} == {"running"}
        assert any("ingest-commit died" in r.getMessage() for r in caplog.records)
    finally:
        worker.stop()


def test_hq_status_and_health_route_report_dead_and_stale_parts(sqlite_url):
    engine = open_engine(sqlite_url)
    runner = CliRunner()
    app = TestClient(create_app(engine, None, BrokerAddress("127.0.0.1", 1)))
    empty = runner.invoke(main, ["hq", "status", "--db", sqlite_url])
    assert empty.exit_code == 1 and "no HQ process has reported" in empty.output
    assert app.get("/health").status_code == 503

    sup = Supervisor("hq-ingest-1", engine=engine, beat_every=0.1, backoff_s=0.01)
    sup.add(Component("fleet", Flaky(1, sup.stopping), progress=lambda: {"refused": 4}))
    sup.start()
    try:
        wait_for(lambda: by_component(hq_health(engine)).get("fleet", {}).get("restarts") == 1
                 and hq_health(engine)["ok"], 30, "fleet alive after one restart")
        ok = runner.invoke(main, ["hq", "status", "--db", sqlite_url])
        assert ok.exit_code == 0, ok.output
        assert "fleet" in ok.output and "alive" in ok.output and "refused 4" in ok.output
        assert "last error: OSError: socket gone (run 1)" in ok.output
        assert "gaps pending: 0 records on 0 devices" in ok.output
        assert app.get("/health").status_code == 200
        assert app.get("/health").json()["components"][0]["restarts"] == 1
    finally:
        sup.stop()
        sup.join()
    # a process that vanished without a word: its last row says "running", but it is old
    with engine.begin() as conn:
        conn.execute(update(component_health).values(state="running", last_beat_ms=1))
    dead = runner.invoke(main, ["hq", "status", "--db", sqlite_url, "--json"])
    assert dead.exit_code == 1
    assert json.loads(dead.output)["components"][0]["status"] == "dead"
    response = app.get("/health")
    assert response.status_code == 503 and response.json()["ok"] is False
