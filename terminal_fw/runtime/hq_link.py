"""The terminal's side of the MQTT connection to HQ: what it subscribes to and where each
message goes.

The uplink (:mod:`terminal_fw.uplink`) owns the connection and the records going up;
this module adds the rest of the conversation. On every (re)connect it subscribes to the
device's downlink topics, announces itself (birth, reported config, a clock sample);
each downlink topic has one handler here, registered with paho per topic:

=========================  ========================================================
topic                      handler
=========================  ========================================================
``ack``                    HQ's ack of records → the uplink drops them
``config/desired``         a new configuration (:mod:`terminal_fw.config_sync`)
``denylist`` snapshot/delta  the denylist (:mod:`terminal_fw.denylist`)
``uid/response``           HQ's answer on a UID credential (:mod:`terminal_fw.uid_auth`)
``command``                a remote command (:mod:`terminal_fw.runtime.commands`)
``time/response``          HQ's clock, for the offset the heartbeat reports
=========================  ========================================================

The handlers run on paho's network thread; a command runs on a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol.fleet import (
    Command,
    CommandResult,
    TimeSample,
    command_result_topic,
    command_topic,
    desired_config_topic,
    reported_config_topic,
    time_request_topic,
    time_response_topic,
    uid_request_topic,
    uid_response_topic,
)
from protocol.topics import (
    DENYLIST_DELTA_TOPIC,
    DENYLIST_SNAPSHOT_TOPIC,
    DenylistDelta,
    DenylistSnapshot,
    MessageError,
    ack_topic,
)
from terminal_fw.denylist import DeltaOutcome
from terminal_fw.local_store import StorageFull
from terminal_fw.runtime import commands

if TYPE_CHECKING:
    from terminal_fw.runtime.terminal import Runtime

log = logging.getLogger(__name__)


class HqLink:
    """Subscriptions and dispatch of HQ's messages to one terminal."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.client = rt.uplink.client
        self.device_id = dev = rt.device_id
        self.config = rt.config
        self.denylist = rt.denylist
        self.presence = rt.presence
        self.uid = rt.uid
        self.emit = rt.emit
        self.check_storage = rt.check_storage
        #: each downlink topic and its handler (paho callbacks: client, userdata, message)
        self.handlers = {
            desired_config_topic(dev): self._on_config,
            DENYLIST_SNAPSHOT_TOPIC: self._on_denylist,
            DENYLIST_DELTA_TOPIC: self._on_denylist,
            uid_response_topic(dev): lambda cl, u, m: self.uid.on_response(m.payload),
            command_topic(dev): self._on_command,
            time_response_topic(dev): self._on_time,
        }
        self.client.message_callback_add(ack_topic(dev), self._guarded(self._on_ack))
        for topic, handler in self.handlers.items():
            self.client.message_callback_add(topic, self._guarded(handler))
        self.client.suppress_exceptions = True  # second line: paho logs, its thread lives on
        rt.uplink.on_connected.append(self._on_connected)

    def _guarded(self, handler: Callable[[Any, Any, Any], None]
                 ) -> Callable[[Any, Any, Any], None]:
        """``handler`` on paho's network thread, which must outlive any message.

        An exception escaping a handler would end that thread: no more acks, config,
        denylist or UID answers, while taps go on offline. A full disk raises the storage
        alarm; anything else is logged with the topic and counted
        (``Runtime.refused_messages``).
        """
        def guarded(client: Any, userdata: Any, message: Any) -> None:
            try:
                handler(client, userdata, message)
            except Exception as exc:
                if self.check_storage(exc):
                    return
                self.rt.refused_messages += 1
                log.warning("message on %s refused: %s: %s", message.topic,
                            type(exc).__name__, str(exc)[:300])
        return guarded

    def _on_connected(self, client) -> None:
        for topic in self.handlers:
            client.subscribe(topic, qos=1)
        self.presence.publish_birth()
        self.publish_config_report()
        client.publish(time_request_topic(self.device_id),
                       TimeSample(self.rt.now_ms()).to_json(), qos=0)
        self.emit("online", bdseq=self.presence.bdseq)

    # --- going up ---------------------------------------------------------------------

    def publish_config_report(self) -> None:
        self.client.publish(reported_config_topic(self.device_id),
                            self.config.report().to_json(), qos=1, retain=True)

    def publish_uid_request(self, payload: bytes) -> bool:
        info = self.client.publish(uid_request_topic(self.device_id), payload, qos=1)
        return info.rc == 0

    def request_config(self) -> None:
        """Read the retained desired configuration again."""
        self.client.subscribe(desired_config_topic(self.device_id), qos=1)

    def request_denylist(self) -> None:
        """Read the retained denylist snapshot again."""
        self.client.subscribe(DENYLIST_SNAPSHOT_TOPIC, qos=1)

    # --- coming down ------------------------------------------------------------------

    def _on_ack(self, client, userdata, message) -> None:
        self.uid.heard_from_hq()
        self.rt.uplink.acknowledge(message.payload)

    def _on_config(self, client, userdata, message) -> None:
        if not message.payload:
            return  # HQ cleared the retained desired config: keep running what we have
        before = self.config.current.version
        try:
            report = self.config.offer(bytes(message.payload))
        except StorageFull as exc:
            self.check_storage(exc)
            return
        self.publish_config_report()
        if report.version != before:
            self.emit("config_applied", version=report.version)
            self.presence.publish_birth()  # HQ sees the new version at once
        elif report.refused_version:
            self.emit("config_refused", version=report.refused_version, error=report.error,
                      running=report.version)

    def _on_denylist(self, client, userdata, message) -> None:
        # (retained messages prove nothing about HQ being reachable: no heard_from_hq here)
        try:
            if message.topic == DENYLIST_SNAPSHOT_TOPIC:
                if not message.payload:
                    return
                changed = self.denylist.apply_snapshot(DenylistSnapshot.from_json(message.payload))
            else:
                outcome = self.denylist.apply_delta(DenylistDelta.from_json(message.payload))
                if outcome is DeltaOutcome.NEED_SNAPSHOT:
                    client.subscribe(DENYLIST_SNAPSHOT_TOPIC, qos=1)  # the retained copy again
                changed = outcome is DeltaOutcome.APPLIED
        except MessageError as exc:
            log.warning("ignoring denylist message: %s", exc)
            return
        except StorageFull as exc:
            self.check_storage(exc)
            return
        if changed:
            self.emit("denylist_applied", version=self.denylist.version)
            self.presence.publish_birth()

    def _on_time(self, client, userdata, message) -> None:
        try:
            sample = TimeSample.from_json(message.payload)
        except MessageError:
            return
        self.uid.heard_from_hq()
        now = self.rt.now_ms()
        if sample.hq_ms and 0 <= now - sample.device_ms < 10_000:
            self.rt.clock_offset_ms = (sample.device_ms + now) // 2 - sample.hq_ms

    def _on_command(self, client, userdata, message) -> None:
        try:
            command = Command.from_json(message.payload)
        except MessageError as exc:
            log.warning("ignoring command: %s", exc)
            return
        self.uid.heard_from_hq()
        threading.Thread(target=self._run_command, args=(command,), daemon=True,
                         name=f"{self.device_id}-command").start()

    def _run_command(self, command: Command) -> None:
        try:
            ok, detail, data = commands.execute(self.rt, command)
        except Exception as exc:  # every command is answered, also when it fails
            log.exception("command %s failed", command.name)
            ok, detail, data = False, f"failed: {exc}", {}
        result = CommandResult(command.command_id, command.name, ok, detail, data)
        self.client.publish(command_result_topic(self.device_id), result.to_json(), qos=1)
        self.emit("command", name=command.name, ok=ok, detail=detail)
