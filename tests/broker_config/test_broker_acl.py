"""Broker ACLs on a real mosquitto: each role may subscribe only to what it needs.

Both configs that OneCard renders are tested, the password broker (demo, tests) and the
mutual-TLS broker of ``onecard broker init``. A refused subscription must come back as
a failure in the SUBACK (MQTT 5 reason code 0x87), not be granted and then silently
starved by the read ACL: a granted ``$share/hq-ingest/...`` subscription makes the
broker deal every second record to the terminal, where the read ACL drops it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_config.install import Site, issue_service_identity, service_tls_context
from broker_config.render import BRIDGE_USER, HQ_USER
from broker_config.runner import Broker
from protocol.fleet import (
    ALL_COMMAND_RESULTS,
    ALL_CONFIG_REPORTS,
    ALL_TIME_REQUESTS,
    ALL_UID_REQUESTS,
    command_topic,
    desired_config_topic,
    time_response_topic,
    uid_response_topic,
)
from protocol.topics import (
    ALL_PRESENCE,
    ALL_RECORDS,
    ALL_RECORDS_SHARED,
    DENYLIST_DELTA_TOPIC,
    DENYLIST_SNAPSHOT_TOPIC,
    ack_topic,
    records_topic,
)
from tests.conftest import have_mosquitto, require
from tests.mtls_helpers import (
    Probe,
    device_credentials,
    make_site,
    remove_site,
    start_broker,
    tls_context,
    wait_for,
)

pytestmark = pytest.mark.broker

NOT_AUTHORIZED = 0x87
DEVICE, OTHER, ATTACKER = "pool-east-gate-a1", "pool-east-gate-b2", "pool-east-gate-x9"

#: What a terminal must never be granted (it is DEVICE here): shared subscriptions
#: (above all HQ ingest's group), everything, the broker's internals, wildcards that
#: reach other devices, other devices' topics, topics HQ reads, its own uplink.
REFUSED_FOR_A_DEVICE = [
    ALL_RECORDS_SHARED,
    "$share/hq-ingest/#",
    "$share/hq-ingest/onecard/v1/dev/+/up/#",
    f"$share/mine/onecard/v1/dev/{DEVICE}/down/#",  # own topics, but as a share group
    "#",
    "$SYS/#",
    "$SYS/broker/clients/connected",
    "+/#",
    "+/v1/dev/+/down/ack",
    "onecard/#",
    "onecard/v1/#",
    "onecard/v1/dev/#",
    "onecard/v1/dev/+/down/#",
    "onecard/v1/dev/+/down/ack",
    ALL_RECORDS,
    ALL_PRESENCE,
    ALL_UID_REQUESTS,
    ack_topic(OTHER),
    command_topic(OTHER),
    f"onecard/v1/dev/{OTHER}/#",
    f"onecard/v1/dev/{DEVICE}/#",  # reaches its own up/ subtree, which it may not read
    records_topic(DEVICE),
    f"onecard/v1/dev/{DEVICE}/up/#",
    f"onecard/v1/dev/{DEVICE}/+/ack",
    "onecard/v1/+/denylist/delta",
]

#: What the terminal firmware subscribes to (terminal_fw/runtime.py, uplink.py).
ALLOWED_FOR_A_DEVICE = [
    ack_topic(DEVICE),
    desired_config_topic(DEVICE),
    uid_response_topic(DEVICE),
    command_topic(DEVICE),
    time_response_topic(DEVICE),
    f"onecard/v1/dev/{DEVICE}/down/#",
    f"onecard/v1/dev/{DEVICE}/down/+",
    DENYLIST_SNAPSHOT_TOPIC,
    DENYLIST_DELTA_TOPIC,
    "onecard/v1/broadcast/#",
]

#: What HQ subscribes to (hq_server/ingest/worker.py, fleet_commands.py).
ALLOWED_FOR_HQ = [ALL_RECORDS_SHARED, ALL_RECORDS, ALL_PRESENCE, ALL_COMMAND_RESULTS,
                  ALL_CONFIG_REPORTS, ALL_UID_REQUESTS, ALL_TIME_REQUESTS]


@dataclass
class Deployment:
    """One running broker in one of the two configs, and how each role logs in to it."""

    kind: str
    broker: Broker
    site: Site | None = None
    certs: Path | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)

    def _probe(self, port: int, ctx, login=None, client_id: str = "") -> Probe:
        probe = Probe(port, ctx, client_id=client_id, login=login)
        self.probes.append(probe)
        assert probe.connect(), f"{self.kind}: could not connect"
        return probe

    def device(self, device_id: str) -> Probe:
        if self.site is None:
            return self._probe(self.broker.port, None, (device_id, self.passwords[device_id]))
        cert, key = device_credentials(self.site, device_id, self.certs)
        return self._probe(self.site.config.device_port,
                           tls_context(self.site.device_ca_cert, cert, key))

    def hq(self, client_id: str) -> Probe:
        if self.site is None:
            return self._probe(self.broker.port, None, (HQ_USER, self.passwords[HQ_USER]),
                               client_id)
        return self._probe(self.site.config.service_port, service_tls_context(self.site),
                           client_id=client_id)

    def close(self) -> None:
        for probe in self.probes:
            probe.close()


@pytest.fixture(params=["password", "mtls"])
def deployment(request, broker_factory, tmp_path) -> Iterator[Deployment]:
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    if request.param == "password":
        passwords = {u: secrets.token_urlsafe(12) for u in (HQ_USER, DEVICE, OTHER, ATTACKER)}
        d = Deployment("password", broker_factory(passwords), passwords=passwords)
        yield d
        d.close()
        return
    site = make_site()
    broker = start_broker(site)
    d = Deployment("mtls", broker, site=site, certs=tmp_path / "certs")
    yield d
    d.close()
    broker.stop()
    remove_site(site)


def refused(codes: list[mqtt.ReasonCode]) -> bool:
    return len(codes) == 1 and codes[0].is_failure and codes[0].value == NOT_AUTHORIZED


def granted(codes: list[mqtt.ReasonCode]) -> bool:
    return len(codes) == 1 and not codes[0].is_failure


def test_a_device_is_refused_every_subscription_beyond_its_own_downlink(deployment):
    dev = deployment.device(DEVICE)
    answers = {f: dev.subscribe(f) for f in REFUSED_FOR_A_DEVICE}
    wrongly_granted = sorted(f for f, codes in answers.items() if not refused(codes))
    assert wrongly_granted == []
    assert dev.client.is_connected()  # a refusal is an answer, not a disconnect


def test_a_device_keeps_its_own_downlink_and_the_broadcasts(deployment):
    dev = deployment.device(DEVICE)
    answers = {f: dev.subscribe(f) for f in ALLOWED_FOR_A_DEVICE}
    assert sorted(f for f, codes in answers.items() if not granted(codes)) == []
    hq = deployment.hq("hq-fleet-test")
    assert not hq.publish(ack_topic(DEVICE), b"ack").is_failure
    assert not hq.publish(command_topic(DEVICE), b"command").is_failure
    assert not hq.publish(DENYLIST_DELTA_TOPIC, b"delta").is_failure
    assert not hq.publish(ack_topic(OTHER), b"not yours").is_failure
    wait_for(lambda: {b"ack", b"command", b"delta"} <= set(dev.received()),
             what="HQ's messages at the device")
    assert b"not yours" not in dev.received()


def test_hq_keeps_every_subscription_ingest_and_the_fleet_service_use(deployment):
    hq = deployment.hq("hq-ingest-acl")
    answers = {f: hq.subscribe(f) for f in ALLOWED_FOR_HQ}
    assert sorted(f for f, codes in answers.items() if not granted(codes)) == []
    for needless in ("#", "$SYS/#", "onecard/v1/dev/+/down/#"):
        assert refused(hq.subscribe(needless)), needless
    dev = deployment.device(DEVICE)
    assert not dev.publish(records_topic(DEVICE), b"r1").is_failure
    wait_for(lambda: hq.received(records_topic(DEVICE)).count(b"r1") >= 1,
             what="a record at HQ")


def test_a_terminal_cannot_join_the_ingest_share_group_and_no_record_is_lost(deployment):
    """The hole: a granted share subscription took every second record from HQ."""
    n = 200
    ingest = deployment.hq("hq-ingest-1")
    assert granted(ingest.subscribe(ALL_RECORDS_SHARED))
    attacker = deployment.device(ATTACKER)
    answers = [attacker.subscribe(ALL_RECORDS_SHARED)]

    stop = threading.Event()

    def keep_trying() -> None:
        while not stop.is_set():
            answers.append(attacker.subscribe(ALL_RECORDS_SHARED))

    trying = threading.Thread(target=keep_trying, daemon=True)
    trying.start()
    victim = deployment.device(OTHER)
    try:
        infos = [victim.client.publish(records_topic(OTHER), str(i).encode(), qos=1)
                 for i in range(n)]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        stop.set()
        trying.join(30)
    # every record was acknowledged to its sender, so every one must reach HQ
    try:
        wait_for(lambda: len(ingest.received()) >= n, timeout=20, what=f"{n} records at HQ")
    except AssertionError:
        pass
    got = sorted(int(p) for p in ingest.received(records_topic(OTHER)))
    assert len(got) == n, f"HQ got {len(got)} of {n} acknowledged records"
    assert got == list(range(n))
    assert attacker.received() == []
    assert all(refused(codes) for codes in answers), \
        f"{sum(granted(c) for c in answers)} of {len(answers)} share subscriptions granted"


@pytest.mark.parametrize("deployment", ["mtls"], indirect=True)  # bridges need mutual TLS
def test_a_store_bridge_reads_downlinks_and_broadcasts_and_nothing_else(deployment):
    site = deployment.site
    issue_service_identity(site, BRIDGE_USER, deployment.certs / "bridge")
    ctx = tls_context(site.device_ca_cert, deployment.certs / "bridge" / "bridge.pem",
                      deployment.certs / "bridge" / "bridge.key")
    bridge = deployment._probe(site.config.service_port, ctx, client_id="bridge-store-01")
    for needed in ("onecard/v1/dev/+/down/#", "onecard/v1/broadcast/#"):
        assert granted(bridge.subscribe(needed)), needed
    for needless in (ALL_RECORDS_SHARED, ALL_RECORDS, "onecard/v1/dev/+/up/#", "#",
                     "$SYS/#", "onecard/v1/dev/#"):
        assert refused(bridge.subscribe(needless)), needless
    assert not bridge.publish(records_topic(DEVICE), b"carried up").is_failure
    assert bridge.publish(ack_topic(DEVICE), b"forged ack").value == NOT_AUTHORIZED


def covers(rule: str, topic_filter: str) -> bool:
    """Every topic ``topic_filter`` can match is matched by ``rule`` (the test's oracle)."""
    r, f = rule.split("/"), topic_filter.split("/")
    for i, level in enumerate(f):
        if i == len(r):
            return False
        if r[i] == "#":
            return not (i == 0 and level.startswith("$"))
        if level == "#" or (r[i] != "+" and r[i] != level):
            return False
        if r[i] == "+" and i == 0 and level.startswith("$"):
            return False
    return len(r) == len(f) or (len(r) == len(f) + 1 and r[-1] == "#")


LEVELS = ["onecard", "v1", "dev", DEVICE, OTHER, "down", "up", "ack", "broadcast",
          "denylist", "+"]


@st.composite
def topic_filters(draw) -> str:
    levels = draw(st.lists(st.sampled_from(LEVELS), min_size=1, max_size=6))
    if draw(st.booleans()):
        levels[0] = draw(st.sampled_from(["onecard", "$SYS"]))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic_filter=topic_filters())
def test_a_device_is_granted_exactly_the_filters_its_downlink_and_broadcasts_cover(
        password_device, topic_filter):
    expected = any(covers(rule, topic_filter) for rule in (
        f"onecard/v1/dev/{DEVICE}/down/#", "onecard/v1/broadcast/#"))
    codes = password_device.subscribe(topic_filter)
    assert granted(codes) if expected else refused(codes), (topic_filter, codes)


@pytest.fixture
def password_device(broker_factory) -> Iterator[Probe]:
    password = secrets.token_urlsafe(12)
    broker = broker_factory({DEVICE: password})
    probe = Probe(broker.port, None, login=(DEVICE, password))
    assert probe.connect()
    yield probe
    probe.close()
