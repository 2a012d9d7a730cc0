"""Hostile JSON on every fleet topic: no payload stops HQ's fleet service or a terminal's
MQTT thread, and the next good message is still answered.

Handlers are driven through paho's own dispatch (``Client._handle_on_message``, what the
network thread calls for each PUBLISH): an exception escaping it is what kills that
thread in production. One test goes through a real broker end to end.
"""

from __future__ import annotations

import json
import secrets
import threading

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from broker_config.render import HQ_USER
from hq_server.fleet.service import FleetService
from protocol import fleet as F
from protocol import topics as T
from protocol.messages import MAX_DEPTH, MessageError, load_object
from protocol.terminal_config import ConfigError, parse_config
from tests.fleet import wait_for
from tests.runtime_world import config_doc, make_runtime

DEV = "gate-01"
DEEP = b"[" * 20_000 + b"]" * 20_000
DEEP_OBJECT = b'{"a":' * 5_000 + b"1" + b"}" * 5_000


def deep_in(field: str, depth: int = 5_000) -> bytes:
    """A message whose ``field`` holds nesting deep enough to overflow the C stack's guard."""
    return b'{"' + field.encode() + b'":' + b"[" * depth + b"]" * depth + b"}"


HOSTILE = [DEEP, DEEP_OBJECT, deep_in("args"), deep_in("data"), deep_in("catalogue"),
           b"\xff\xfe\x00", b"9" * 5000, b'{"version": 1e999999}', b'{"x": NaN}',
           b"{" * 70_000, b"[" * 200 + b"1", b""]


# --- the one reader ----------------------------------------------------------------------

@pytest.mark.parametrize("payload", HOSTILE)
def test_load_object_refuses_hostile_bytes_with_a_reason(payload):
    with pytest.raises(MessageError) as err:
        load_object(payload, "thing")
    assert str(err.value).startswith("malformed thing: ")


def test_nesting_is_refused_before_the_decoder_recurses():
    ok = b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert load_object(ok, "thing")["a"] is not None
    too_deep = b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    with pytest.raises(MessageError, match="nested deeper than"):
        load_object(too_deep, "thing")
    # brackets inside strings are text, not nesting
    text = json.dumps({"a": "[" * 10_000 + '\\"{' * 100}).encode()
    assert load_object(text, "thing")["a"].startswith("[[")


def test_size_limit():
    with pytest.raises(MessageError, match="over 100 bytes"):
        load_object(b'{"a": "' + b"x" * 200 + b'"}', "thing", max_bytes=100)


@pytest.mark.parametrize("payload", [DEEP, deep_in("catalogue"), b"\xff", b"[1]"])
def test_config_document_refusals_are_config_errors(payload):
    with pytest.raises(ConfigError):
        parse_config(payload)


@pytest.mark.parametrize("parse", [
    T.Ack.from_json, T.Birth.from_json, T.Death.from_json, T.Heartbeat.from_json,
    T.DenylistSnapshot.from_json, T.DenylistDelta.from_json, F.ConfigReport.from_json,
    F.UidAuthRequest.from_json, F.UidAuthResponse.from_json, F.Command.from_json,
    F.CommandResult.from_json, F.TimeSample.from_json])
@pytest.mark.parametrize("payload", [DEEP, deep_in("args"), b"\xff\xfe"])
def test_every_topic_parser_refuses_deep_json_as_a_message_error(parse, payload):
    with pytest.raises(MessageError):
        parse(payload)


# --- HQ's fleet service ---------------------------------------------------------------------

def deliver(client: mqtt.Client, topic: str, payload: bytes) -> None:
    """Hand one PUBLISH to paho's dispatch, as its network thread does."""
    message = mqtt.MQTTMessage(topic=topic.encode())
    message.payload = payload
    client._handle_on_message(message)


class Sent:
    """What a client published, in order (its connection is not the point here)."""

    def __init__(self, client: mqtt.Client) -> None:
        self.messages: list[tuple[str, bytes]] = []
        client.publish = self.publish  # type: ignore[method-assign]

    def publish(self, topic, payload=None, qos=0, retain=False, properties=None):
        self.messages.append((topic, payload))
        return mqtt.MQTTMessageInfo(0)

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in self.messages if t == topic]


def fleet_service() -> tuple[FleetService, Sent]:
    svc = FleetService(host="127.0.0.1", port=1, username="hq", password="x")
    return svc, Sent(svc.client)


HQ_TOPICS = [F.time_request_topic(DEV), F.uid_request_topic(DEV),
             F.command_result_topic(DEV), F.reported_config_topic(DEV)]


def good_time_request(svc: FleetService, sent: Sent, device_ms: int) -> None:
    """A clock sample still gets HQ's echo: the service is alive and answering."""
    deliver(svc.client, F.time_request_topic(DEV), F.TimeSample(device_ms).to_json())
    answers = [F.TimeSample.from_json(p) for p in sent.on(F.time_response_topic(DEV))]
    assert answers and answers[-1].device_ms == device_ms


def good_uid_request(svc: FleetService, sent: Sent, request_id: str) -> None:
    req = F.UidAuthRequest(request_id, "0102030405", "em4100", 3000)
    deliver(svc.client, F.uid_request_topic(DEV), req.to_json())
    answers = [F.UidAuthResponse.from_json(p) for p in sent.on(F.uid_response_topic(DEV))]
    assert answers and answers[-1].request_id == request_id


@pytest.mark.parametrize("topic", HQ_TOPICS)
def test_nested_json_on_a_fleet_topic_does_not_stop_hq_answering(topic):
    svc, sent = fleet_service()
    for payload in (DEEP, deep_in("data"), b"\xff"):
        deliver(svc.client, topic, payload)  # raised RecursionError on the old main
    good_time_request(svc, sent, 1)
    good_uid_request(svc, sent, "r1")
    assert svc.refused[topic.split("/", 4)[-1]] == 3


def test_a_refused_message_is_logged_with_the_device_its_topic_names(caplog):
    svc, _ = fleet_service()
    deliver(svc.client, F.uid_request_topic(DEV), DEEP)
    assert any(DEV in r.getMessage() and "nested deeper" in r.getMessage()
               for r in caplog.records)


def test_a_bug_in_hq_deciding_is_answered_not_fatal():
    def broken(device_id, request):
        raise KeyError("members table gone")

    svc = FleetService(host="127.0.0.1", port=1, username="hq", password="x",
                       authorise=broken, denylisted=lambda c: 1 / 0)
    sent = Sent(svc.client)
    deliver(svc.client, F.uid_request_topic(DEV),
            F.UidAuthRequest("r9", "01", "em4100", 1).to_json())
    good_time_request(svc, sent, 7)


def test_kept_results_and_requests_are_bounded():
    svc, _ = fleet_service()
    for i in range(3 * FleetService.KEEP):
        deliver(svc.client, F.command_result_topic(DEV),
                F.CommandResult(f"c{i}", "sync_now", True).to_json())
        deliver(svc.client, F.uid_request_topic(DEV),
                F.UidAuthRequest(f"r{i}", "01", "em4100", 1).to_json())
    assert len(svc.results) <= FleetService.KEEP and len(svc.uid_requests) <= FleetService.KEEP
    assert f"c{3 * FleetService.KEEP - 1}" in svc.results


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30)


@st.composite
def hostile_payloads(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "deep", "fields"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    depth = draw(st.integers(1, 60_000))
    opener = draw(st.sampled_from([b"[", b'{"k":']))
    closer = b"]" if opener == b"[" else b"}"
    inner = opener * depth + b"0" + closer * depth
    if kind == "deep":
        return inner
    key = draw(st.sampled_from(["args", "data", "readers", "cards", "added", "removed",
                                "catalogue", "device_ms", "request_id", "version"]))
    return b'{"' + key.encode() + b'":' + inner + b"}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(HQ_TOPICS), payload=hostile_payloads(), n=st.integers(1, 10**9))
def test_property_no_payload_on_any_hq_topic_stops_the_next_answer(topic, payload, n):
    svc, sent = fleet_service()
    deliver(svc.client, topic, payload)
    good_time_request(svc, sent, n)
    good_uid_request(svc, sent, f"r{n}")


# --- the terminal ---------------------------------------------------------------------------

TERMINAL_TOPICS = [F.desired_config_topic(DEV), T.DENYLIST_SNAPSHOT_TOPIC,
                   T.DENYLIST_DELTA_TOPIC, F.uid_response_topic(DEV), F.command_topic(DEV),
                   F.time_response_topic(DEV), T.ack_topic(DEV)]


@pytest.fixture
def terminal(tmp_path):
    rt = make_runtime(tmp_path, device_id=DEV)
    sent = Sent(rt.client)
    yield rt, sent
    rt.outbox.close() if hasattr(rt.outbox, "close") else None


def good_config(rt, sent: Sent, version: int) -> None:
    """A valid config document is still applied and reported."""
    deliver(rt.client, F.desired_config_topic(DEV), json.dumps(config_doc(version)).encode())
    assert rt.config.current.version == version
    assert F.ConfigReport.from_json(sent.on(F.reported_config_topic(DEV))[-1]).version == version


@pytest.mark.parametrize("topic", TERMINAL_TOPICS)
def test_nested_json_on_a_terminal_topic_does_not_stop_its_mqtt_thread(terminal, topic):
    rt, sent = terminal
    for payload in (DEEP, deep_in("catalogue"), deep_in("args"), b"\xff"):
        deliver(rt.client, topic, payload)  # raised RecursionError on the old main
    good_config(rt, sent, 2)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(topic=st.sampled_from(TERMINAL_TOPICS), payload=hostile_payloads())
def test_property_no_payload_on_any_terminal_topic_stops_the_next_config(terminal, topic,
                                                                        payload):
    rt, sent = terminal
    deliver(rt.client, topic, payload)
    good_config(rt, sent, rt.config.current.version + 1)


# --- end to end, through our broker -----------------------------------------------------------

@pytest.mark.broker
def test_fleet_service_survives_a_nested_json_storm_through_the_broker(broker_factory):
    hq_password, dev_password = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    broker = broker_factory({HQ_USER: hq_password, DEV: dev_password})
    svc = FleetService(host="127.0.0.1", port=broker.port, username=HQ_USER,
                       password=hq_password).start()
    answers: list[F.TimeSample] = []
    got = threading.Event()
    dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEV, protocol=mqtt.MQTTv5)
    dev.username_pw_set(DEV, dev_password)

    def on_time(client, userdata, message):
        answers.append(F.TimeSample.from_json(message.payload))
        got.set()

    dev.message_callback_add(F.time_response_topic(DEV), on_time)
    dev.on_connect = lambda c, *a: c.subscribe(F.time_response_topic(DEV), qos=1)
    dev.connect("127.0.0.1", broker.port)
    dev.loop_start()
    try:
        wait_for(lambda: dev.is_connected(), 30, "device connected")
        for topic in HQ_TOPICS:
            for payload in (DEEP, deep_in("data")):
                dev.publish(topic, payload, qos=1).wait_for_publish(10)
        dev.publish(F.time_request_topic(DEV), F.TimeSample(42).to_json(), qos=1)
        wait_for(lambda: any(a.device_ms == 42 for a in answers), 30, "HQ's clock answer")
        assert svc.client._thread is not None and svc.client._thread.is_alive()
        assert sum(svc.refused.values()) >= len(HQ_TOPICS)
    finally:
        dev.disconnect()
        dev.loop_stop()
        svc.stop()


def test_a_failing_terminal_handler_is_counted_not_fatal(terminal, monkeypatch):
    rt, sent = terminal

    def broken(snapshot):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rt.denylist, "apply_snapshot", broken)
    deliver(rt.client, T.DENYLIST_SNAPSHOT_TOPIC, T.DenylistSnapshot(3).to_json())
    assert rt.refused_messages == 1
    good_config(rt, sent, 5)


# --- presence, through HQ's ingest worker --------------------------------------------------

@pytest.fixture(scope="module")
def presence_worker(tmp_path_factory):
    from hq_server.db.engine import open_engine
    from hq_server.devices.registry import add_device
    from hq_server.ingest.worker import IngestWorker

    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('presence') / 'hq.db'}")
    from tests.hq_records import known_store

    add_device(engine, DEV, "00" * 32, known_store(engine, "store-01"))
    worker = IngestWorker(engine, host="127.0.0.1", port=1, username="hq", password="x")
    yield worker
    engine.dispose()


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["birth", "death", "heartbeat"]), payload=hostile_payloads(),
       bdseq=st.integers(1, 10**6))
def test_property_no_presence_payload_stops_the_next_birth(presence_worker, kind, payload,
                                                           bdseq):
    from hq_server.devices.presence import fleet_presence

    topic = f"{T.device_topic_root(DEV)}/up/presence/{kind}"
    deliver(presence_worker.client, topic, payload)
    birth = T.Birth(bdseq=bdseq + 10**7, time_ms=1, software_version="1", role="gate",
                    store="store-01")
    deliver(presence_worker.client, T.birth_topic(DEV), birth.to_json())
    presence_worker._take_presence()  # what the commit stage does between batches
    assert presence_worker.presence_inbox.empty()
    assert fleet_presence(presence_worker.engine)[DEV]["bdseq"] >= birth.bdseq
