"""Helpers for tests against our mutual-TLS broker: a site on disk and a probing client."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker_config import pki
from broker_config.install import Site, SiteConfig, init_site
from broker_config.runner import MtlsBroker, free_port
from tests.fleet import wait_for

TIMEOUT = 15.0  # generous: other engineers' tests share the two cores


def make_site() -> Site:
    """A site under /tmp (mosquitto, running as its own user, must reach the folder)."""
    root = Path(tempfile.mkdtemp(prefix="onecard-site-"))
    return init_site(root, SiteConfig(["127.0.0.1", "localhost"], device_port=free_port(),
                                       service_port=free_port(), device_bind="127.0.0.1"))


def remove_site(site: Site) -> None:
    shutil.rmtree(site.root, ignore_errors=True)


def device_credentials(site: Site, device_id: str, directory: Path,
                       ca: pki.Authority | None = None) -> tuple[Path, Path]:
    """Issue a device client certificate straight from a CA (enrolment is tested elsewhere)."""
    key, cert = pki.issue_client_cert(ca or site.device_ca(), device_id)
    directory.mkdir(parents=True, exist_ok=True)
    pki.write_secret(directory / f"{device_id}.key", pki.key_pem(key))
    pki.write_public(directory / f"{device_id}.pem", pki.cert_pem(cert))
    return directory / f"{device_id}.pem", directory / f"{device_id}.key"


def tls_context(ca_file: Path, cert: Path | None = None, key: Path | None = None
                ) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class Probe:
    """An MQTT 5 client that records what happened to it, for assertions."""

    def __init__(self, port: int, ctx: ssl.SSLContext, client_id: str = "",
                 clean_start: bool = True, session_expiry: int = 0) -> None:
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.connack: mqtt.ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, mqtt.ReasonCode] = {}
        self.subacks: dict[int, list[mqtt.ReasonCode]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set_context(ctx)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.closed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.port = port
        self.clean_start = clean_start
        self.session_expiry = session_expiry

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        self.pubacks[mid] = rc

    def _on_subscribe(self, client, userdata, mid, rcs, props) -> None:
        self.subacks[mid] = list(rcs)

    def connect(self, timeout: float = TIMEOUT) -> bool:
        """True once CONNACK says yes; False if the broker closed or never answered."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=10,
                                clean_start=self.clean_start, properties=props)
        except (OSError, ssl.SSLError):
            return False
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.closed.is_set() or (self.connack is not None and self.connack.is_failure):
                return False
            time.sleep(0.02)
        return False

    def publish(self, topic: str, payload: bytes, timeout: float = TIMEOUT) -> mqtt.ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, timeout, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, topic: str, timeout: float = TIMEOUT) -> list[mqtt.ReasonCode]:
        _rc, mid = self.client.subscribe(topic, qos=1)
        wait_for(lambda: mid in self.subacks, timeout, f"SUBACK for {topic}")
        return self.subacks[mid]

    def received(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if topic is None or t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_broker(site: Site) -> MtlsBroker:
    return MtlsBroker(site.broker).start()
