"""The terminal's side of fleet presence: birth, Last Will, clean offline, heartbeat.

Sparkplug's pattern (see :mod:`protocol.topics`): before every connection attempt the
birth/death sequence number ``bdseq`` goes up by one (kept on disk, so a restart never
reuses one) and the Last Will is set to a Death carrying it; once connected, a retained
Birth with the same ``bdseq`` says who we are and what we run. If the terminal dies, the
broker publishes the Will; HQ lets a Death end only the session it names, so a Will that
arrives late, after we reconnected under a higher ``bdseq``, changes nothing. A clean
shutdown publishes the Death itself with reason "clean". Heartbeats carry the backlog
and health figures HQ's fleet view shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from protocol.topics import Birth, Death, Heartbeat, birth_topic, death_topic, heartbeat_topic
from terminal_fw.local_store import LocalStore

log = logging.getLogger(__name__)


class PresenceReporter:
    def __init__(self, store: LocalStore, client: mqtt.Client, device_id: str, *,
                 describe: Callable[[], dict[str, Any]], health: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.client = client
        self.device_id = device_id
        self.describe = describe
        self.health = health
        self.clock = clock
        self.bdseq = int(self.store.get("bdseq", 0))
        self._lock = threading.Lock()

    def attach(self) -> None:
        """Set the Will before every connection attempt (paho calls on_pre_connect)."""
        self.client.on_pre_connect = self._pre_connect

    def _pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self.bdseq += 1
            try:
                self.store.put("bdseq", self.bdseq)
            except Exception:  # a full disk: the next start may reuse this bdseq
                log.exception("could not save bdseq %d", self.bdseq)
            client.will_set(death_topic(self.device_id), Death(self.bdseq).to_json(), qos=1,
                            retain=True)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def publish_birth(self) -> None:
        birth = Birth(bdseq=self.bdseq, time_ms=self._now_ms(), **self.describe())
        self.client.publish(birth_topic(self.device_id), birth.to_json(), qos=1, retain=True)

    def publish_heartbeat(self) -> None:
        beat = Heartbeat(bdseq=self.bdseq, time_ms=self._now_ms(), **self.health())
        self.client.publish(heartbeat_topic(self.device_id), beat.to_json(), qos=1)

    def publish_clean_death(self, timeout: float = 3.0) -> bool:
        """Say "offline, on purpose" before disconnecting; True if the broker has it."""
        death = Death(self.bdseq, "clean", self._now_ms())
        info = self.client.publish(death_topic(self.device_id), death.to_json(), qos=1,
                                   retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()
