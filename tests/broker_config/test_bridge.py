"""A store's own mosquitto bridged to HQ's: records go up, acks come down, and what
terminals publish while the store's uplink is down waits at the store and arrives later."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from broker_config.install import init_store_broker, service_tls_context
from broker_config.runner import MtlsBroker, free_port
from protocol.topics import ack_topic, records_topic
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

DEVICE = "store-01-gate-b1"


@pytest.fixture
def brokers():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    site = make_site()
    hq_broker = start_broker(site)
    store_dir = Path(tempfile.mkdtemp(prefix="onecard-store-"))
    files = init_store_broker(site, store_dir, store="store-01", hostnames=["127.0.0.1"],
                              hq_host="127.0.0.1", device_port=free_port(),
                              device_bind="127.0.0.1", restart_timeout=(1, 2))
    store_broker = MtlsBroker(files).start()
    yield site, hq_broker, store_broker
    store_broker.stop()
    hq_broker.stop()
    remove_site(site)
    shutil.rmtree(store_dir, ignore_errors=True)


def hq_listener(site) -> Probe:
    p = Probe(site.config.service_port, service_tls_context(site), client_id="hq-ingest-x",
              clean_start=False, session_expiry=86400)
    assert p.connect()
    return p


def test_bridge_carries_records_up_and_acks_down_and_queues_while_down(brokers, tmp_path):
    site, hq_broker, store_broker = brokers
    listener = hq_listener(site)
    listener.subscribe("onecard/v1/dev/+/up/#")
    cert, key = device_credentials(site, DEVICE, tmp_path)
    device = Probe(store_broker.port, tls_context(site.device_ca_cert, cert, key),
                   client_id=DEVICE, clean_start=False, session_expiry=86400)
    assert device.connect()
    device.subscribe(ack_topic(DEVICE))

    # the bridge comes up on its own; keep knocking until a record gets through
    n = 0

    def through() -> bool:
        nonlocal n
        n += 1
        assert not device.publish(records_topic(DEVICE), f"hello-{n}".encode()).is_failure
        return any(p.startswith(b"hello-") for p in listener.received())
    wait_for(through, 30, "the bridge to connect")

    assert not listener.publish(ack_topic(DEVICE), b'{"through": 1, "missing": []}').is_failure
    wait_for(lambda: device.received(ack_topic(DEVICE)) == [b'{"through": 1, "missing": []}'],
             what="HQ's ack through the bridge")
    # a device still cannot publish under another device's topic at the store
    assert device.publish(records_topic("store-01-gate-b2"), b"forged").value == 0x87
    assert not device.publish(records_topic(DEVICE), b"marker").is_failure
    wait_for(lambda: b"marker" in listener.received())
    assert b"forged" not in listener.received()

    # the store's uplink goes down: HQ's broker is away
    listener.close()
    hq_broker.stop()
    queued = [f"offline-{i}".encode() for i in range(300)]
    for payload in queued:
        assert not device.publish(records_topic(DEVICE), payload).is_failure  # store keeps it
    hq_broker.start()
    back = hq_listener(site)
    try:
        wait_for(lambda: set(queued) <= set(back.received()), 60,
                 "records queued at the store while the uplink was down")
    finally:
        back.close()
        device.close()
