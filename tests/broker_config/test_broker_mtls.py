"""The production broker config on a real mosquitto: mutual TLS, per-device ACL, CRL."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_config import pki
from broker_config.install import SiteDeviceCA, reload_broker, service_tls_context
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

NOT_AUTHORIZED = 0x87

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def site():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    site = make_site()
    broker = start_broker(site)
    yield site
    broker.stop()
    remove_site(site)


@pytest.fixture
def creds(site, tmp_path):
    def make(device_id: str, ca: pki.Authority | None = None):
        cert, key = device_credentials(site, device_id, tmp_path / "certs", ca)
        return tls_context(site.device_ca_cert, cert, key)
    return make


@pytest.fixture
def probes():
    made: list[Probe] = []

    def make(*args, **kwargs) -> Probe:
        p = Probe(*args, **kwargs)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def hq(site, probes) -> Probe:
    p = probes(site.config.service_port, service_tls_context(site), client_id="hq-test")
    assert p.connect()
    return p


def test_device_with_its_certificate_connects_and_reaches_hq(site, creds, probes):
    listener = hq(site, probes)
    listener.subscribe("onecard/v1/dev/+/up/#")
    dev = probes(site.config.device_port, creds("gate-a1"))
    assert dev.connect()
    assert not dev.publish(records_topic("gate-a1"), b"r1").is_failure
    wait_for(lambda: listener.received(records_topic("gate-a1")) == [b"r1"])


def test_no_client_certificate_is_refused(site, probes):
    dev = probes(site.config.device_port, tls_context(site.device_ca_cert))
    assert not dev.connect()


def test_certificate_from_another_ca_is_refused(site, creds, probes):
    rogue = pki.create_authority("OneCard device CA")  # same name, other key
    dev = probes(site.config.device_port, creds("gate-a1", ca=rogue))
    assert not dev.connect()


def test_device_certificate_cannot_use_the_services_listener(site, creds, probes):
    dev = probes(site.config.service_port, creds("gate-a1"))
    assert not dev.connect()
    # ... and HQ's service certificate is no device certificate either
    svc = probes(site.config.device_port, service_tls_context(site))
    assert not svc.connect()


def test_publishing_under_another_devices_topic_is_refused_and_never_delivered(
        site, creds, probes):
    listener = hq(site, probes)
    listener.subscribe("onecard/v1/dev/+/up/#")
    listener.subscribe("onecard/v1/broadcast/#")
    dev = probes(site.config.device_port, creds("gate-b1"))
    assert dev.connect()
    assert not dev.subscribe(ack_topic("gate-b1"))[0].is_failure
    assert dev.publish(records_topic("gate-b2"), b"forged").value == NOT_AUTHORIZED
    assert dev.publish(ack_topic("gate-b1"), b"self-ack").value == NOT_AUTHORIZED
    assert dev.publish("onecard/v1/broadcast/denylist", b"x").value == NOT_AUTHORIZED
    # a marker through the same broker proves the listener had time to see the others
    assert not dev.publish(records_topic("gate-b1"), b"marker").is_failure
    wait_for(lambda: b"marker" in listener.received())
    assert listener.received() == [b"marker"]
    assert dev.received() == []


def test_reading_another_devices_commands_is_refused(site, creds, probes):
    victim = probes(site.config.device_port, creds("gate-c2"))
    assert victim.connect()
    victim.subscribe(ack_topic("gate-c2"))
    spy = probes(site.config.device_port, creds("gate-c1"))
    assert spy.connect()
    codes = spy.subscribe(ack_topic("gate-c2"))
    wildcard = spy.subscribe("onecard/v1/dev/+/down/#")
    spy.subscribe(ack_topic("gate-c1"))
    sender = hq(site, probes)
    assert not sender.publish(ack_topic("gate-c2"), b"for c2 only").is_failure
    assert not sender.publish(ack_topic("gate-c1"), b"for c1").is_failure
    wait_for(lambda: victim.received() == [b"for c2 only"])
    wait_for(lambda: b"for c1" in spy.received())
    # refused in the SUBACK (the onecard_acl plugin), and the read ACL filters deliveries
    assert [c.value for c in codes + wildcard] == [NOT_AUTHORIZED, NOT_AUTHORIZED]
    assert set(spy.received()) == {b"for c1"}


def test_a_device_cannot_take_over_another_devices_session(site, creds, probes):
    first = probes(site.config.device_port, creds("gate-d1"), client_id="gate-d1")
    assert first.connect()
    thief = probes(site.config.device_port, creds("gate-d2"), client_id="gate-d1")
    assert thief.connect()  # allowed, but under its own id (use_username_as_clientid)
    assert not first.closed.wait(1.0)
    assert first.client.is_connected()


def test_revoked_certificate_is_refused_after_reload_and_cut_off(site, tmp_path, probes):
    cert, key = device_credentials(site, "gate-e1", tmp_path / "e1")
    other_cert, other_key = device_credentials(site, "gate-e2", tmp_path / "e2")
    # A second revoked certificate to watch the reload with: a probe that connects
    # before the broker applied the CRL must not take over gate-e1's session.
    canary_cert, canary_key = device_credentials(site, "gate-e3", tmp_path / "e3")
    online = probes(site.config.device_port, tls_context(site.device_ca_cert, cert, key))
    assert online.connect()

    ca = SiteDeviceCA(site)
    serials = [pki.x509.load_pem_x509_certificate(c.read_bytes()).serial_number
               for c in (cert, canary_cert)]
    ca.revoke_certificates(serials)
    assert set(serials) <= set(pki.revoked_serials(site.broker.device_crl.read_bytes()))

    # SIGHUP has applied the CRL to new connections (mosquitto 2.0.11, checked here)
    def refused(c: Path, k: Path) -> bool:
        p = probes(site.config.device_port, tls_context(site.device_ca_cert, c, k))
        return not p.connect(timeout=5)
    wait_for(lambda: refused(canary_cert, canary_key), what="revoked certificate refused")
    assert refused(cert, key)
    still = probes(site.config.device_port, tls_context(site.device_ca_cert, other_cert, other_key))
    assert still.connect()

    # the open connection survives a reload: HQ cuts it off explicitly
    assert online.client.is_connected()
    assert ca.disconnect("gate-e1")
    assert online.closed.wait(10)
    assert still.client.is_connected()
    assert reload_broker(site.broker.pid_file)


def test_queue_never_drops_records_for_an_absent_subscriber(site, creds, probes):
    """The default max_queued_messages (1000) would silently drop most of these."""
    n = 2500
    sub = probes(site.config.service_port, service_tls_context(site), client_id="hq-slow",
                 clean_start=True, session_expiry=3600)
    assert sub.connect()
    sub.subscribe(records_topic("gate-f1"))
    sub.close()
    dev = probes(site.config.device_port, creds("gate-f1"))
    assert dev.connect()
    infos = [dev.client.publish(records_topic("gate-f1"), str(i).encode(), qos=1)
             for i in range(n)]
    for info in infos:
        info.wait_for_publish(timeout=60)
    back = probes(site.config.service_port, service_tls_context(site), client_id="hq-slow",
                  clean_start=False, session_expiry=3600)
    assert back.connect()
    wait_for(lambda: len(back.received()) >= n, timeout=60, what=f"{n} queued records")
    assert sorted(int(p) for p in back.received()) == list(range(n))
