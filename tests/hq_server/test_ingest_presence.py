"""Fleet presence from birth, death (Last Will) and heartbeat messages."""

from __future__ import annotations

import secrets
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_config.render import HQ_USER
from hq_server.db.engine import open_engine
from hq_server.devices.presence import (
    Presence,
    UnknownDevice,
    fleet_presence,
    next_presence,
    record_presence,
)
from hq_server.devices.registry import add_device
from hq_server.ingest.worker import IngestWorker
from protocol.topics import (
    Birth,
    Death,
    Heartbeat,
    MessageError,
    birth_topic,
    death_topic,
    heartbeat_topic,
)
from tests.hq_records import STORES, Till, known_store, store_engine

BIRTH = Birth(bdseq=4, time_ms=1, software_version="1.2.0", role="gate", store="store-a",
              config_version=7, denylist_version=12, readers={"entry": "ok", "exit": "ok"})


def test_birth_heartbeat_and_death_follow_one_session():
    p = next_presence(Presence(), BIRTH, now_ms=1000)
    assert p.online and p.bdseq == 4 and p.config_version == 7 and p.session_started_ms == 1000
    p = next_presence(p, Heartbeat(bdseq=4, time_ms=2, outbox_depth=17, oldest_unsent_age_ms=9000,
                                   last_ack_seq=120, disk_free_bytes=5 << 30, clock_offset_ms=-40,
                                   readers={"entry": "ok", "exit": "absent"}), now_ms=2000)
    assert (p.outbox_depth, p.last_seen_ms, p.clock_offset_ms) == (17, 2000, -40)
    assert p.readers["exit"] == "absent"
    p = next_presence(p, Death(bdseq=4, reason="clean", time_ms=3), now_ms=3000)
    assert not p.online and p.offline_reason == "clean" and p.went_offline_ms == 3000


def test_a_late_last_will_does_not_end_the_new_session():
    p = next_presence(Presence(), BIRTH, now_ms=1000)
    p = next_presence(p, Birth(**{**BIRTH.__dict__, "bdseq": 5}), now_ms=2000)  # reconnected
    late = next_presence(p, Death(bdseq=4), now_ms=3000)  # the broker's will for session 4
    assert late == p and late.online
    assert next_presence(p, Heartbeat(bdseq=4, time_ms=9, outbox_depth=99), now_ms=4000) == p
    assert next_presence(p, BIRTH, now_ms=5000) == p  # an older birth, delivered again


def test_a_retained_birth_delivered_after_its_death_keeps_the_terminal_offline():
    p = next_presence(Presence(), BIRTH, now_ms=1000)
    p = next_presence(p, Death(bdseq=4), now_ms=2000)
    assert next_presence(p, BIRTH, now_ms=3000) == p
    assert not p.online and p.offline_reason == "lwt"


def test_malformed_presence_is_refused_with_a_reason():
    with pytest.raises(MessageError, match="bdseq"):
        Birth.from_json(b'{"bdseq": -1, "time_ms": 0}')
    with pytest.raises(MessageError, match="reason"):
        Death.from_json(b'{"bdseq": 1, "reason": "tired"}')
    with pytest.raises(MessageError):
        Heartbeat.from_json(b"[1, 2]")


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def test_presence_is_kept_in_the_registry(engine):
    Till("gate-01", "store-a").register(engine, role="gate")
    record_presence(engine, birth_topic("gate-01"), BIRTH.to_json(), now_ms=1000)
    record_presence(engine, heartbeat_topic("gate-01"),
                    Heartbeat(bdseq=4, time_ms=5, outbox_depth=3).to_json(), now_ms=2000)
    fleet = fleet_presence(engine)
    assert fleet["gate-01"]["online"] and fleet["gate-01"]["outbox_depth"] == 3
    assert fleet["gate-01"]["software_version"] == "1.2.0"
    assert fleet["gate-01"]["readers"] == {"entry": "ok", "exit": "ok"}
    record_presence(engine, death_topic("gate-01"), Death(bdseq=4).to_json(), now_ms=3000)
    assert fleet_presence(engine)["gate-01"]["offline_reason"] == "lwt"
    with pytest.raises(UnknownDevice):
        record_presence(engine, birth_topic("gate-77"), BIRTH.to_json())
    with pytest.raises(MessageError):
        record_presence(engine, birth_topic("gate-01"), b"{not json")


def _terminal(port: int, device_id: str, password: str, bdseq: int) -> mqtt.Client:
    """A terminal's presence as issue 6 specifies it: will first, then the birth."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(device_id, password)
    client.will_set(death_topic(device_id), Death(bdseq=bdseq).to_json(), qos=1, retain=True)
    client.connect("127.0.0.1", port, keepalive=2)
    client.loop_start()
    birth = Birth(**{**BIRTH.__dict__, "bdseq": bdseq})
    client.publish(birth_topic(device_id), birth.to_json(), qos=1, retain=True).wait_for_publish(10)
    return client


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_hq_sees_online_unclean_loss_and_clean_offline_through_the_broker(
        broker_factory, sqlite_url):
    engine = open_engine(sqlite_url)
    password, hq_password = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    add_device(engine, "gate-01", Till("gate-01", "store-a").public_key_hex,
               known_store(engine, "store-a"), "gate")
    broker = broker_factory({HQ_USER: hq_password, "gate-01": password})
    first = _terminal(broker.port, "gate-01", password, bdseq=1)  # birth retained before HQ
    worker = IngestWorker(engine, host="127.0.0.1", port=broker.port, username=HQ_USER,
                          password=hq_password, reconcile_every=None)
    worker.start()
    try:
        state = lambda: fleet_presence(engine)["gate-01"]  # noqa: E731
        assert _wait(lambda: state()["online"] and state()["bdseq"] == 1), state()
        first.loop_stop()
        first.socket().close()  # the cable pulled: no DISCONNECT, the broker sends the will
        assert _wait(lambda: state()["offline_reason"] == "lwt"), state()

        second = _terminal(broker.port, "gate-01", password, bdseq=2)
        assert _wait(lambda: state()["online"] and state()["bdseq"] == 2), state()
        # A late copy of the old session's will must not take the new session down.
        second.publish(death_topic("gate-01"), Death(bdseq=1).to_json(), qos=1).wait_for_publish(10)
        second.publish(heartbeat_topic("gate-01"), Heartbeat(bdseq=2, time_ms=1, outbox_depth=8)
                       .to_json(), qos=1).wait_for_publish(10)
        assert _wait(lambda: state()["outbox_depth"] == 8), state()
        assert state()["online"]
        second.publish(death_topic("gate-01"), Death(bdseq=2, reason="clean").to_json(), qos=1,
                       retain=True).wait_for_publish(10)
        assert _wait(lambda: state()["offline_reason"] == "clean"), state()
        second.disconnect()
        second.loop_stop()
    finally:
        worker.stop()
