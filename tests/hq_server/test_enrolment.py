"""Enrolment end to end: HQ's HTTPS API on uvicorn, a real mosquitto with mutual TLS.

A terminal enrolled by token connects with its certificate, publishes only where it
may, gets its records into the ledger, and can be rolled and revoked.
"""

from __future__ import annotations

import os
import shutil
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from broker_config.install import Site, SiteDeviceCA, service_tls_context
from broker_config.runner import MtlsBroker, free_port
from hq_server.api import ApiServer, create_app
from hq_server.db.engine import open_engine
from hq_server.db.tables import devices, quarantine
from hq_server.devices.enrolment import BrokerAddress, create_token, device_history
from hq_server.devices.registry import load_device
from hq_server.ingest.batch import Ingest
from hq_server.ingest.worker import IngestWorker
from hq_server.operators.accounts import create_operator
from protocol.topics import records_topic
from terminal_fw.enrolment import (
    ENROLMENT_FILE,
    EnrolmentFailed,
    enrol,
    load_enrolment,
    mqtt_tls_context,
    roll_keys,
)
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox
from terminal_fw.uplink import Uplink
from tests.conftest import have_mosquitto, require
from tests.fleet import member_card
from tests.hq_records import VisitGate, known_store
from tests.mtls_helpers import Probe, make_site, remove_site, start_broker, tls_context, wait_for

PASSWORD = "correct horse battery staple"
NOT_AUTHORIZED = 0x87

pytestmark = pytest.mark.broker


@dataclass
class HQ:
    site: Site
    broker: MtlsBroker
    engine: object
    url: str
    workdir: Path

    def http(self, auth: tuple[str, str] | None = ("admin", PASSWORD)) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.site.device_ca_cert))
        return httpx.Client(base_url=self.url, verify=ctx, auth=auth, timeout=30)

    def token(self, store: str = "store-01", role: str = "gate") -> str:
        known_store(self.engine, store)
        with self.http() as client:
            r = client.post("/v1/enrolment-tokens", json={"store": store, "role": role})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def enrol(self, token: str, name: str):
        return enrol(self.url, token, self.workdir / name / "secrets",
                      ca_file=self.site.device_ca_cert)

    def count(self, table) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture(scope="module")
def hq():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    site = make_site()
    broker = start_broker(site)
    workdir = Path(tempfile.mkdtemp(prefix="onecard-enrol-"))
    engine = open_engine(f"sqlite:///{workdir / 'hq.db'}")
    create_operator(engine, "admin", PASSWORD)
    app = create_app(engine, SiteDeviceCA(site),
                     BrokerAddress("127.0.0.1", site.config.device_port))
    server = ApiServer(app, "127.0.0.1", free_port(), site.api_cert, site.api_key).start()
    yield HQ(site, broker, engine, server.url, workdir)
    server.stop()
    broker.stop()
    engine.dispose()
    remove_site(site)
    shutil.rmtree(workdir, ignore_errors=True)


def sign_visit(secrets: Path, enrolled, seq_card: int = 1):
    """A real gate tap on the enrolled identity; returns (outbox, signed record)."""
    ident = load_or_create(secrets, enrolled.device_id, enrolled.store)
    outbox = Outbox(secrets.parent / "terminal.db")
    decision = VisitGate(ident, outbox, "swim").tap(member_card(seq_card))
    return outbox, decision.record


def assert_refused(port: int, ctx: ssl.SSLContext) -> None:
    """The broker refuses these credentials (its SIGHUP reload is asynchronous: allow it a moment)."""
    def refused() -> bool:
        p = Probe(port, ctx)
        try:
            return not p.connect(timeout=5)
        finally:
            p.close()
    wait_for(refused, 30, "the broker to refuse revoked credentials")


def test_api_speaks_tls_only_and_publishes_openapi(hq: HQ):
    with hq.http(auth=None) as client:
        spec = client.get("/openapi.json").json()
    assert {"/v1/enrol", "/v1/enrolment-tokens", "/v1/devices/{device_id}/roll",
            "/v1/devices/{device_id}/revoke"} <= set(spec["paths"])
    with pytest.raises(httpx.HTTPError):
        httpx.get(hq.url.replace("https://", "http://") + "/healthz", timeout=10)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust our CA
        httpx.get(hq.url + "/healthz", timeout=10)


def test_tokens_need_an_operator(hq: HQ):
    body = {"store": "store-01", "role": "gate"}
    with hq.http(auth=None) as client:
        assert client.post("/v1/enrolment-tokens", json=body).status_code == 401
    with hq.http(auth=("admin", "wrong password!!")) as client:
        r = client.post("/v1/enrolment-tokens", json=body)
    assert r.status_code == 401 and r.json()["code"] == "not-authenticated"
    with hq.http(auth=("nobody", PASSWORD)) as client:
        assert client.post("/v1/enrolment-tokens", json=body).status_code == 401
    with hq.http() as client:
        r = client.post("/v1/enrolment-tokens", json={"store": "a b", "role": "gate"})
        assert r.status_code == 422
        # A terminal belongs to a store of the chain: none for a store HQ does not know.
        ghost = client.post("/v1/enrolment-tokens", json={"store": "no-such-store",
                                                           "role": "gate"})
    assert ghost.status_code == 422 and ghost.json()["code"] == "unknown-store"
    assert "not known at HQ" in ghost.json()["detail"]


def test_enrolled_terminal_connects_and_publishes_only_where_it_may(hq: HQ):
    enrolled = hq.enrol(hq.token(), "t1")
    secrets = enrolled.secrets_dir
    assert enrolled.store == "store-01" and enrolled.role == "gate"
    assert enrolled.device_id.startswith("store-01-gate-")
    assert (enrolled.broker_host, enrolled.broker_port) == ("127.0.0.1",
                                                             hq.site.config.device_port)
    assert enrolled.config["topics"]["records"] == records_topic(enrolled.device_id)
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    for f in secrets.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # HQ registered exactly the key the terminal signs with
    ident = load_or_create(secrets, enrolled.device_id, enrolled.store)
    with hq.engine.connect() as conn:
        device = load_device(conn, enrolled.device_id)
    assert device is not None and device.status == "active"
    assert device.public_key.public_bytes_raw().hex() == ident.public_key_hex

    listener = Probe(hq.site.config.service_port, service_tls_context(hq.site), "hq-t1")
    assert listener.connect()
    listener.subscribe("onecard/v1/dev/+/up/#")
    dev = Probe(enrolled.broker_port, mqtt_tls_context(secrets))
    try:
        assert dev.connect()
        assert dev.publish(records_topic("store-01-gate-other"), b"forged").value == NOT_AUTHORIZED
        assert not dev.publish(records_topic(enrolled.device_id), b"mine").is_failure
        wait_for(lambda: listener.received() == [b"mine"])
    finally:
        dev.close()
        listener.close()


def test_enrolled_terminal_records_reach_the_ledger_over_mutual_tls(hq: HQ):
    enrolled = hq.enrol(hq.token(), "t2")
    outbox, _ = sign_visit(enrolled.secrets_dir, enrolled)
    for n in range(2, 4):
        sign_visit(enrolled.secrets_dir, enrolled, n)
    worker = IngestWorker(hq.engine, host="127.0.0.1", port=hq.site.config.service_port,
                          username="", password="", client_id="hq-ingest-t2")
    worker.client.tls_set_context(service_tls_context(hq.site))
    uplink = Uplink(enrolled.device_id, outbox, host=enrolled.broker_host,
                    port=enrolled.broker_port, password="", resend_after=2.0)
    uplink.client.tls_set_context(mqtt_tls_context(enrolled.secrets_dir))
    worker.start()
    uplink.start()
    try:
        wait_for(lambda: outbox.backlog() == 0, 60, "HQ's ack of the terminal's records")
    finally:
        uplink.stop()
        worker.stop()
    assert worker.totals.posted == 3


def test_token_works_once_and_expires(hq: HQ):
    token = hq.token()
    hq.enrol(token, "once")
    before = hq.count(devices)
    with pytest.raises(EnrolmentFailed) as used:
        hq.enrol(token, "twice")
    assert used.value.code == "token_used" and "already used" in str(used.value)
    assert token not in str(used.value)

    stale = create_token(hq.engine, known_store(hq.engine, "store-01"), "gate", "test", now_ms=1_000_000).token
    with pytest.raises(EnrolmentFailed) as expired:
        hq.enrol(stale, "late")
    assert expired.value.code == "token_expired" and "expired" in str(expired.value)

    with pytest.raises(EnrolmentFailed) as unknown:
        hq.enrol("oce_not-a-token", "guess")
    assert unknown.value.code == "unknown_token"
    assert hq.count(devices) == before  # refused enrolments register nothing
    assert not (hq.workdir / "twice" / "secrets" / ENROLMENT_FILE).exists()

    # the keys made for the refused attempt are reused with a good token
    pending = sorted(p.name for p in (hq.workdir / "late" / "secrets").iterdir())
    assert pending == ["mqtt.key.pending", "signing_key.pem.pending"]
    assert hq.enrol(hq.token(), "late").device_id


def test_rolled_keys_replace_the_old_ones_at_once(hq: HQ):
    enrolled = hq.enrol(hq.token(), "roller")
    secrets = enrolled.secrets_dir
    old_copy = hq.workdir / "roller-old"
    shutil.copytree(secrets, old_copy)
    _, old_record = sign_visit(old_copy, enrolled)
    online = Probe(enrolled.broker_port, mqtt_tls_context(secrets))
    assert online.connect()

    rolled = roll_keys(hq.url, secrets)
    assert rolled.device_id == enrolled.device_id
    assert online.closed.wait(15), "the old session was not cut off"
    online.close()
    assert_refused(enrolled.broker_port, tls_context(
        hq.site.device_ca_cert, old_copy / "mqtt.pem", old_copy / "mqtt.key"))
    new = Probe(enrolled.broker_port, mqtt_tls_context(secrets))
    assert new.connect()
    new.close()

    # HQ now verifies with the new key only
    _, new_record = sign_visit(secrets, rolled, 7)
    result = Ingest(hq.engine).process([(records_topic(enrolled.device_id), old_record.wire),
                                        (records_topic(enrolled.device_id), new_record.wire)])
    assert dict(result.rejected) == {"bad_signature": 1}
    assert result.posted == 1
    assert [e["event"] for e in device_history(hq.engine, enrolled.device_id)] == [
        "enrolled", "rolled"]
    with pytest.raises(EnrolmentFailed) as again:  # the old key cannot roll any more
        roll_keys(hq.url, old_copy)
    assert again.value.code == "bad_signature"


def test_revoked_device_is_refused_by_the_broker_and_by_hq(hq: HQ):
    enrolled = hq.enrol(hq.token(), "lost")
    outbox, record = sign_visit(enrolled.secrets_dir, enrolled)
    online = Probe(enrolled.broker_port, mqtt_tls_context(enrolled.secrets_dir))
    assert online.connect()

    with hq.http() as client:
        r = client.post(f"/v1/devices/{enrolled.device_id}/revoke",
                        json={"reason": "stolen from the pool entrance"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked" and len(r.json()["revoked_certificates"]) == 1
        listed = {d["device_id"]: d["status"] for d in client.get("/v1/devices").json()["items"]}
    assert listed[enrolled.device_id] == "revoked"

    assert online.closed.wait(15), "the revoked device's session stayed open"
    online.close()
    assert_refused(enrolled.broker_port, mqtt_tls_context(enrolled.secrets_dir))

    before = hq.count(quarantine)
    result = Ingest(hq.engine).process([(records_topic(enrolled.device_id), record.wire)])
    assert dict(result.rejected) == {"revoked_device": 1} and result.posted == 0
    assert hq.count(quarantine) == before + 1
    with pytest.raises(EnrolmentFailed) as roll:
        roll_keys(hq.url, enrolled.secrets_dir)
    assert roll.value.code == "revoked" and "revoked" in str(roll.value)
    assert load_enrolment(enrolled.secrets_dir).device_id == enrolled.device_id
    history = device_history(hq.engine, enrolled.device_id)
    assert history[-1]["event"] == "revoked" and history[-1]["actor"] == "admin"
