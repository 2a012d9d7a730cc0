"""One HQ process from one settings object: it starts the parts the settings ask for,
supervises them (a part that dies is restarted, one that keeps dying stops the process),
and stops cleanly — against our real mosquitto, and over mutual TLS on a real site."""

from __future__ import annotations

import ssl
import threading
import urllib.error
import urllib.request

import pytest

from broker_config.render import HQ_USER
from broker_config.runner import free_port
from hq_server.db.engine import open_engine
from hq_server.process.hq_process import HqProcess
from hq_server.process.settings import BrokerLink, HqSettings
from hq_server.process.supervision import EXIT_FAILED, hq_health
from onecard.site import api_settings, broker_link
from tests.conftest import have_mosquitto, require
from tests.fleet import wait_for
from tests.mtls_helpers import make_site, remove_site, start_broker

INGEST_PARTS = {"ingest-network", "ingest-check", "ingest-commit", "ingest-side"}


@pytest.fixture
def broker(broker_factory):
    return broker_factory({HQ_USER: "hq-secret"})


def settings_for(broker, db_url: str, **parts) -> HqSettings:
    return HqSettings(db_url, BrokerLink("127.0.0.1", broker.port, HQ_USER, "hq-secret"),
                      client_id="hq-test", beat_every_s=0.1, **parts)


def components(engine) -> dict[str, str]:
    return {c["component"]: c["status"] for c in hq_health(engine)["components"]}


@pytest.mark.parametrize(("parts", "expected"), [
    ({}, INGEST_PARTS | {"fleet"}),
    ({"fleet": False}, INGEST_PARTS),
    ({"ingest": False}, {"fleet"}),
])
def test_runs_the_parts_the_settings_ask_for_and_stops_them_cleanly(broker, sqlite_url,
                                                                     parts, expected):
    engine = open_engine(sqlite_url)
    with HqProcess(settings_for(broker, sqlite_url, **parts), engine=engine) as hq:
        assert (hq.ingest is not None) == ("ingest-commit" in expected)
        assert (hq.fleet is not None) == ("fleet" in expected)
        assert set(hq.supervisor.health()) == expected
        if hq.ingest is not None:
            wait_for(hq.ingest.subscribed.is_set, 30, "ingest subscribed")
        if hq.fleet is not None:
            wait_for(hq.fleet.connected.is_set, 30, "fleet service connected")
        wait_for(lambda: components(engine) == dict.fromkeys(expected, "alive"), 30,
                 "every part alive in the health rows")
        assert hq_health(engine)["ok"]
    assert components(engine) == dict.fromkeys(expected, "stopped")
    assert not any(t.name.startswith("hq-") and t.is_alive() for t in threading.enumerate()
                   if t.name not in ("hq-fleet-connect",))


def test_a_dying_part_is_restarted_and_keeps_answering(broker, sqlite_url):
    engine = open_engine(sqlite_url)
    with HqProcess(settings_for(broker, sqlite_url, ingest=False), engine=engine) as hq:
        wait_for(hq.fleet.connected.is_set, 30, "fleet service connected")
        hq.fleet.client.loop_stop()  # its network thread ends under it
        wait_for(lambda: hq.supervisor.health()["fleet"]["restarts"] == 1, 30, "a restart")
        assert "network loop had ended" in hq.supervisor.health()["fleet"]["last_error"]
        wait_for(hq.fleet.connected.is_set, 30, "fleet service connected again")
        assert hq.failure is None


def test_a_part_that_keeps_dying_stops_the_process_with_a_failure_status(broker, sqlite_url):
    settings = settings_for(broker, sqlite_url, ingest=False, max_restarts=0)
    hq = HqProcess(settings).start()
    try:
        wait_for(hq.fleet.connected.is_set, 30, "fleet service connected")
        hq.fleet.client.loop_stop()
        assert hq.wait() == EXIT_FAILED
        assert hq.failure.startswith("fleet died 1 times")
    finally:
        hq.stop()


def test_settings_refuse_a_process_that_could_not_run():
    with pytest.raises(ValueError, match="at least one part"):
        HqSettings("sqlite://", ingest=False, fleet=False)
    with pytest.raises(ValueError, match="need a broker"):
        HqSettings("sqlite://")
    assert "secret" not in repr(BrokerLink("h", 1883, "hq", "secret"))


def api_answers(url: str, ca: ssl.SSLContext) -> int:
    try:
        return urllib.request.urlopen(f"{url}/health", context=ca, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening (yet, or again)
        return 0


@pytest.fixture(scope="module")
def site():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    site = make_site()
    broker = start_broker(site)
    yield site
    broker.stop()
    remove_site(site)


def test_the_whole_hq_of_a_site_over_mutual_tls(site, tmp_path):
    """What `hq ingest` and `hq serve-api` run, in one process: ingest, fleet and API."""
    db_url = f"sqlite:///{tmp_path / 'hq.db'}"
    engine = open_engine(db_url)
    settings = HqSettings(db_url, broker_link(site.root), client_id="hq-site",
                          api=api_settings(site.root, port=free_port()), beat_every_s=0.1)
    trust = ssl.create_default_context(cafile=str(site.device_ca_cert))
    with HqProcess(settings, engine=engine) as hq:
        assert hq.api.listening.is_set()  # start() returns once the API listens
        wait_for(hq.ingest.subscribed.is_set, 30, "ingest subscribed over mutual TLS")
        wait_for(hq.fleet.connected.is_set, 30, "fleet service connected over mutual TLS")
        wait_for(lambda: api_answers(hq.api.url, trust) == 200, 30, "GET /health says ok")

        hq.api.server.server.should_exit = True  # the API stops serving under HQ
        wait_for(lambda: hq.supervisor.health()["api"]["restarts"] == 1, 30, "API restarted")
        wait_for(lambda: api_answers(hq.api.url, trust) == 200, 30, "the API answers again")
    assert components(engine) == dict.fromkeys(INGEST_PARTS | {"fleet", "api"}, "stopped")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_api_port_that_is_taken_is_an_error_at_start(site, tmp_path):
    """uvicorn ends its own thread with SystemExit when it cannot bind (the warning)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = HqSettings(f"sqlite:///{tmp_path / 'hq.db'}", ingest=False, fleet=False,
                              api=api_settings(site.root, port=port), health_rows=False)
        hq = HqProcess(settings)
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
            hq.start()
    assert hq.supervisor.stopping.is_set()
