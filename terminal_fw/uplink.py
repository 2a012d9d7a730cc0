"""Uplink: publish outbox records to HQ over MQTT and drop them on HQ's ack.

PUBACK from the broker only says the broker has the message; it says nothing about
HQ's ledger. So the uplink keeps every record until HQ's own acknowledgement
(:class:`protocol.topics.Ack`) arrives on the device's ack topic, and re-publishes a
record that stays unacknowledged for ``resend_after`` seconds or that HQ reports
missing. After a lost connection paho reconnects with exponential backoff and the
uplink resumes from the oldest unacknowledged record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.topics import Ack, ack_topic, records_topic
from terminal_fw.outbox import Outbox

log = logging.getLogger(__name__)


class Uplink:
    def __init__(
        self,
        device_id: str,
        outbox: Outbox,
        *,
        host: str,
        port: int,
        password: str,
        window: int = 1000,
        resend_after: float = 5.0,
        tick: float = 0.05,
    ) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.host, self.port = host, port
        self.window = window
        self.resend_after = resend_after
        self.tick = tick
        self.connected = threading.Event()
        #: called on paho's network thread after each successful (re)connect, once the
        #: uplink has subscribed to its acks: the HQ link subscribes to the rest there
        self.on_connected: list[Callable[[mqtt.Client], None]] = []
        self.last_ack_at: float | None = None
        self._sent_at: dict[int, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._allowed = True
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-{device_id}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(device_id, password)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=0.2, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._connect()
        self._thread = threading.Thread(target=self._run, name=f"uplink-{self.device_id}",
                                        daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # acks wait at the broker while we are away
        self.client.connect_async(self.host, self.port, keepalive=15, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self._allowed = False
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    def set_link(self, up: bool) -> None:
        """Cut or restore the broker connection (a cable pulled, for the demo and tests)."""
        if up and not self._allowed:
            self._allowed = True
            self._connect()
        elif not up and self._allowed:
            self._allowed = False
            self.client.disconnect()
            self.client.loop_stop()

    def notify(self) -> None:
        """A new record is in the outbox: publish without waiting for the next tick."""
        self._wake.set()

    # --- MQTT callbacks (paho's network thread) --------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker refused connection: %s", self.device_id, reason_code)
            return
        client.subscribe(ack_topic(self.device_id), qos=1)
        with self._lock:
            self._sent_at.clear()  # resume from the oldest unacknowledged record
        self.connected.set()
        self._wake.set()
        for listener in self.on_connected:
            listener(client)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._allowed:
            return
        log.info("%s: lost broker connection (%s), reconnecting", self.device_id, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        self.acknowledge(message.payload)

    def acknowledge(self, payload: bytes) -> None:
        """HQ's ack (the payload of the device's ack topic): drop what HQ has committed,
        send again what it reports missing."""
        try:
            ack = Ack.from_json(payload)
        except ValueError as exc:
            log.warning("%s: ignoring %s", self.device_id, exc)
            return
        self.outbox.acknowledge(ack.through)
        self.last_ack_at = time.time()
        with self._lock:
            for seq in [s for s in self._sent_at if s <= ack.through or s in ack.missing]:
                del self._sent_at[seq]
        if ack.missing:
            self._wake.set()

    # --- sender -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick)
            self._wake.clear()
            if self.connected.is_set() and self._allowed:
                try:
                    self._publish_due()
                except Exception:  # keep the uplink alive; the record stays in the outbox
                    log.exception("%s: publish round failed", self.device_id)

    def _publish_due(self) -> None:
        now = time.monotonic()
        due = []
        for item in self.outbox.pending(limit=self.window):
            with self._lock:
                sent = self._sent_at.get(item.seq)
            if sent is None or now - sent >= self.resend_after:
                due.append(item)
        sent_seqs = []
        for item in due:
            info = self.client.publish(records_topic(self.device_id), item.wire, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break  # connection went away; try again after reconnect
            with self._lock:
                self._sent_at[item.seq] = now
            sent_seqs.append(item.seq)
        self.outbox.mark_sent(sent_seqs)
