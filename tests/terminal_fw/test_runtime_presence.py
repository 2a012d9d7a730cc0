"""HQ's view of a terminal's presence: online with its versions and backlog, a clean
offline, an unclean loss (Last Will), and a Last Will that arrives after the terminal
already came back, which must not mark it offline."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_config.render import HQ_USER
from hq_server.devices.presence import Presence, next_presence
from protocol.topics import ALL_PRESENCE, Death, presence_kind
from tests.card_world import T0
from tests.fleet import wait_for
from tests.runtime_world import config_doc, make_runtime, make_settings, member_card

pytestmark = pytest.mark.broker
TIMEOUT = 30.0


class HqPresence:
    """HQ's presence rule (:func:`hq_server.devices.presence.next_presence`) fed from the broker."""

    def __init__(self, port: int, password: str) -> None:
        self.password = password
        self.state: dict[str, Presence] = {}
        self.log: list[tuple[str, str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hq-presence-test",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(HQ_USER, password)
        self.client.on_connect = lambda c, *a: c.subscribe(ALL_PRESENCE, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        from hq_server.devices.presence import parse_presence

        device, msg = parse_presence(message.topic, message.payload)
        with self._lock:
            self.log.append((device, presence_kind(message.topic), bytes(message.payload)))
            self.state[device] = next_presence(self.state.get(device, Presence()), msg,
                                               int(time.time() * 1000))

    def of(self, device: str) -> Presence:
        with self._lock:
            return self.state.get(device, Presence())

    def deaths(self, device: str) -> list[Death]:
        with self._lock:
            return [Death.from_json(p) for d, k, p in self.log if d == device and k == "death"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def world(broker_factory):
    hq_password, dev_password = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    broker = broker_factory({HQ_USER: hq_password, "gate-01": dev_password})
    hq = HqPresence(broker.port, hq_password)
    yield broker, hq, dev_password
    hq.close()


def test_online_with_versions_and_backlog_then_clean_offline(world, tmp_path):
    broker, hq, password = world
    rt = make_runtime(tmp_path, broker_port=broker.port, password=password)
    rt.clock = rt.taps.clock = lambda: T0 / 1000
    rt.config.offer(config_doc(4))
    rt.start()
    try:
        wait_for(lambda: hq.of("gate-01").online, TIMEOUT, "HQ sees the terminal online")
        p = hq.of("gate-01")
        assert (p.bdseq, p.role, p.store, p.config_version) == (1, "gate", "store-01", 4)
        rt.role.on_card(member_card(), "entry")  # a record HQ has not acknowledged
        wait_for(lambda: hq.of("gate-01").outbox_depth == 1, TIMEOUT, "heartbeat with backlog")
        p = hq.of("gate-01")
        assert p.last_ack_seq == 0 and p.disk_free_bytes > 0 and p.oldest_unsent_age_ms >= 0
    finally:
        rt.stop(clean=True)
    wait_for(lambda: not hq.of("gate-01").online, TIMEOUT, "HQ sees the clean offline")
    assert hq.of("gate-01").offline_reason == "clean"


def test_unclean_loss_of_a_terminal_process_is_seen_through_its_last_will(world, tmp_path):
    broker, hq, password = world
    make_settings(tmp_path)  # identity and chain keys
    env = dict(os.environ, ONECARD_BROKER_PASSWORD=password)
    env.pop("ONECARD_FAILPOINT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "onecard.cli", "terminal", "run", "--secrets",
         str(tmp_path / "secrets"), "--data", str(tmp_path / "data"), "--role", "gate",
         "--broker-port", str(broker.port), "--mock-gpio"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "terminal.err").open("wb"))
    try:
        wait_for(lambda: hq.of("gate-01").online, TIMEOUT, "terminal process online")
        bdseq = hq.of("gate-01").bdseq
        proc.send_signal(signal.SIGKILL)  # the power cord
        proc.wait(timeout=TIMEOUT)
        wait_for(lambda: not hq.of("gate-01").online, TIMEOUT, "the Last Will")
        p = hq.of("gate-01")
        assert (p.offline_reason, p.bdseq) == ("lwt", bdseq)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_late_last_will_after_the_terminal_came_back_leaves_it_online(world, tmp_path):
    """The first session's link dies uncleanly; the terminal comes back under a new bdseq.
    Its old Last Will then reaches HQ late — as a store bridge or a broker cluster may
    deliver it, and as the retained Will always reaches an HQ that starts afterwards —
    and must not mark the new session offline."""
    broker, hq, password = world
    first = make_runtime(tmp_path, broker_port=broker.port, password=password).start()
    wait_for(lambda: hq.of("gate-01").online, TIMEOUT, "first session online")
    old = first.presence.bdseq
    first.uplink._allowed = False  # the link dies: no DISCONNECT, the broker sends the Will
    first.client.loop_stop()
    first.client.socket().close()
    wait_for(lambda: any(d.bdseq == old for d in hq.deaths("gate-01")), TIMEOUT, "the Will")
    assert hq.of("gate-01").offline_reason == "lwt"
    will = next(p for d, k, p in hq.log if k == "death")
    second = make_runtime(tmp_path, broker_port=broker.port, password=password).start()
    try:
        new = second.presence.bdseq
        assert new > old
        wait_for(lambda: hq.of("gate-01").online and hq.of("gate-01").bdseq == new, TIMEOUT,
                 "the new session's birth")
        # the old Will arrives again, after the new birth
        late = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        late.username_pw_set("gate-01", password)
        late.connect("127.0.0.1", broker.port)
        late.loop_start()
        late.publish("onecard/v1/dev/gate-01/up/presence/death", will, qos=1).wait_for_publish(10)
        late.disconnect()
        late.loop_stop()
        wait_for(lambda: len(hq.deaths("gate-01")) >= 2, TIMEOUT, "the late Will")
        assert hq.of("gate-01").online and hq.of("gate-01").bdseq == new
        # an HQ that starts only now gets the retained Birth and the retained old Will
        later = HqPresence(broker.port, hq.password)
        try:
            wait_for(lambda: later.of("gate-01").bdseq == new, TIMEOUT, "retained birth")
            time.sleep(0.3)
            assert later.of("gate-01").online
        finally:
            later.close()
    finally:
        second.stop(clean=True)
        first.stop(clean=False)
