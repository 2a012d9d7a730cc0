"""HQ's side of the terminal protocols that are not records: config, denylist, UID
authorisation, commands and the clock (see :mod:`protocol.fleet`).

:class:`FleetService` is one MQTT client with HQ's identity. It

* publishes each terminal's desired config, retained, after validating it with the
  same parser the terminal uses (a document HQ would refuse never leaves HQ);
* publishes the denylist: the delta first (terminals online apply it at once), then the
  new snapshot, retained, for terminals that start later or missed a delta;
* answers UID authorisation requests through ``authorise`` (HQ's decision: a member
  lookup, a ticket check); a credential on the denylist is refused whatever it says;
* sends commands and collects their results, and keeps the config each terminal reports;
* echoes clock samples with HQ's time, so terminals can report their clock offset.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hq_server.denylist import publish_denylist
from protocol.fleet import (
    ALL_COMMAND_RESULTS,
    ALL_CONFIG_REPORTS,
    ALL_TIME_REQUESTS,
    ALL_UID_REQUESTS,
    Command,
    CommandResult,
    ConfigReport,
    TimeSample,
    UidAuthRequest,
    UidAuthResponse,
    command_topic,
    desired_config_topic,
    time_response_topic,
    uid_response_topic,
)
from protocol.ids import credential_card_id
from protocol.terminal_config import parse_config
from protocol.topics import (
    DenylistDelta,
    DenylistSnapshot,
    MessageError,
    device_of_topic,
)

log = logging.getLogger(__name__)

Authorise = Callable[[str, UidAuthRequest], UidAuthResponse]


def refuse_all(device_id: str, request: UidAuthRequest) -> UidAuthResponse:
    return UidAuthResponse(request.request_id, False, "no UID credentials are sold here")


class FleetService:
    def __init__(self, *, host: str, port: int, username: str, password: str,
                 client_id: str = "hq-fleet", authorise: Authorise = refuse_all,
                 denylisted: Callable[[str], bool] = lambda card_id: False,
                 answer: bool = True) -> None:
        """``answer=False`` for a short-lived client (the CLI): it sends and collects, but
        leaves UID authorisation and the clock to the running service."""
        self.authorise = authorise
        self.answer = answer
        self.denylisted = denylisted
        self.results: dict[str, CommandResult] = {}
        self.reports: dict[str, ConfigReport] = {}
        self.uid_requests: list[tuple[str, UidAuthRequest]] = []
        self.connected = threading.Event()
        self._changed = threading.Condition()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self.connected.clear()
        client.message_callback_add(ALL_UID_REQUESTS, self._on_uid_request)
        client.message_callback_add(ALL_COMMAND_RESULTS, self._on_result)
        client.message_callback_add(ALL_CONFIG_REPORTS, self._on_report)
        client.message_callback_add(ALL_TIME_REQUESTS, self._on_time)
        self.client = client
        self.host, self.port = host, port

    def start(self, timeout: float = 15.0) -> FleetService:
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise TimeoutError("HQ fleet service could not reach the broker")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused HQ fleet service: %s", reason_code)
            return
        topics = [ALL_COMMAND_RESULTS, ALL_CONFIG_REPORTS]
        if self.answer:
            topics += [ALL_UID_REQUESTS, ALL_TIME_REQUESTS]
        for topic in topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # --- publishing --------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def publish_config(self, device_id: str, document: dict[str, Any]) -> int:
        """Make ``document`` the terminal's desired config; ConfigError if it is invalid."""
        config = parse_config(document)
        self._publish(desired_config_topic(device_id),
                      json.dumps(document, sort_keys=True).encode(), retain=True)
        return config.version

    def publish_raw_config(self, device_id: str, payload: bytes) -> None:
        """Publish a document without checking it (tests of the terminal's own checks)."""
        self._publish(desired_config_topic(device_id), payload, retain=True)

    def publish_denylist(self, snapshot: DenylistSnapshot,
                         delta: DenylistDelta | None = None) -> None:
        """A change to the denylist: the delta now, then the snapshot it leads to
        (through :func:`hq_server.denylist.publish_denylist`)."""
        if delta is not None and delta.to_version != snapshot.version:
            raise ValueError("the delta must lead to the snapshot's version")
        publish_denylist(self.client, delta, snapshot)

    def send_command(self, device_id: str, name: str, args: dict[str, Any] | None = None) -> str:
        command = Command(secrets.token_hex(8), name, dict(args or {}), int(time.time() * 1000))
        self._publish(command_topic(device_id), command.to_json())
        return command.command_id

    def result(self, command_id: str, timeout: float) -> CommandResult | None:
        self.wait(lambda: command_id in self.results, timeout)
        return self.results.get(command_id)

    # --- answering -----------------------------------------------------------------------

    def _on_uid_request(self, client, userdata, message) -> None:
        device_id = device_of_topic(message.topic)
        try:
            request = UidAuthRequest.from_json(message.payload)
        except MessageError as exc:
            log.warning("uid request from %s: %s", device_id, exc)
            return
        assert device_id is not None
        self.uid_requests.append((device_id, request))
        card_id = credential_card_id(request.kind, request.credential)
        if self.denylisted(card_id):
            answer = UidAuthResponse(request.request_id, False, "credential on the denylist (reported lost)")
        else:
            try:
                answer = self.authorise(device_id, request)
            except Exception as exc:
                log.exception("UID authorisation failed")
                answer = UidAuthResponse(request.request_id, False, f"HQ could not decide: {exc}")
        client.publish(uid_response_topic(device_id), answer.to_json(), qos=1)
        self._notify()

    def _on_result(self, client, userdata, message) -> None:
        try:
            result = CommandResult.from_json(message.payload)
        except MessageError as exc:
            log.warning("command result: %s", exc)
            return
        self.results[result.command_id] = result
        self._notify()

    def _on_report(self, client, userdata, message) -> None:
        device_id = device_of_topic(message.topic)
        if device_id is None or not message.payload:
            return
        try:
            self.reports[device_id] = ConfigReport.from_json(message.payload)
        except MessageError as exc:
            log.warning("config report from %s: %s", device_id, exc)
            return
        self._notify()

    def _on_time(self, client, userdata, message) -> None:
        device_id = device_of_topic(message.topic)
        try:
            sample = TimeSample.from_json(message.payload)
        except MessageError:
            return
        if device_id is not None:
            client.publish(time_response_topic(device_id),
                           TimeSample(sample.device_ms, int(time.time() * 1000)).to_json(), qos=0)
