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
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hq_server.clock import Clock, system_clock
from hq_server.devices.uid_credentials import Authorise, refuse_all
from hq_server.process.supervision import Component
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
    DENYLIST_DELTA_TOPIC,
    DENYLIST_SNAPSHOT_TOPIC,
    DenylistDelta,
    DenylistSnapshot,
    MessageError,
    device_of_topic,
)

log = logging.getLogger(__name__)

def publish_denylist(client, delta: DenylistDelta | None, snapshot: DenylistSnapshot) -> None:
    """Send a change to every terminal: the delta, then the new retained snapshot.

    ``client`` is a connected paho client with HQ's identity (the broker lets only HQ
    write the broadcast topics).
    """
    if delta is not None:
        client.publish(DENYLIST_DELTA_TOPIC, delta.to_json(), qos=1)
    client.publish(DENYLIST_SNAPSHOT_TOPIC, snapshot.to_json(), qos=1, retain=True)


class FleetService:
    KEEP = 1000  #: command results and UID requests kept for callers and tests

    def __init__(self, *, host: str, port: int, username: str, password: str,
                 client_id: str = "hq-fleet", authorise: Authorise = refuse_all,
                 denylisted: Callable[[str], bool] = lambda card_id: False,
                 answer: bool = True, clock: Clock = system_clock) -> None:
        """``answer=False`` for a short-lived client (the CLI): it sends and collects, but
        leaves UID authorisation and the clock to the running service."""
        self.authorise = authorise
        self.clock = clock  # HQ's time: stamps commands, answers clock samples
        self.answer = answer
        self.denylisted = denylisted
        # Bounded: terminals decide how many of these arrive (KEEP newest are kept).
        self.results: dict[str, CommandResult] = {}
        self.reports: dict[str, ConfigReport] = {}
        self.uid_requests: deque[tuple[str, UidAuthRequest]] = deque(maxlen=self.KEEP)
        self.answered: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by topic kind, e.g. "up/time/request"
        self.last_refusal = ""
        self._counts_lock = threading.Lock()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._loop_started = threading.Event()
        self._changed = threading.Condition()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self.connected.clear()
        client.message_callback_add(ALL_UID_REQUESTS, self._guarded(self._on_uid_request))
        client.message_callback_add(ALL_COMMAND_RESULTS, self._guarded(self._on_result))
        client.message_callback_add(ALL_CONFIG_REPORTS, self._guarded(self._on_report))
        client.message_callback_add(ALL_TIME_REQUESTS, self._guarded(self._on_time))
        client.suppress_exceptions = True  # second line: paho logs, its thread lives on
        client.enable_logger(log)
        self.client = client
        self.host, self.port = host, port

    def start(self, timeout: float = 15.0) -> FleetService:
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        self._loop_started.set()
        if not self.connected.wait(timeout):
            raise TimeoutError("HQ fleet service could not reach the broker")
        return self

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    def component(self) -> Component:
        """The service as a supervised component (see hq_server.process.supervision).

        Restarted when it dies, never fatal at once: it keeps no state a restart loses
        (results and reports are conveniences; requests are answered as they come).
        """
        return Component("fleet", self._watch_network, progress=self.progress,
                         stop=self._stop.set)

    def _watch_network(self) -> None:
        """paho's network thread, watched: a loop that ended while we run is a death
        (``loop_start`` succeeds only when no loop runs, and then starts a new one)."""
        while not self._stop.wait(0.5):
            if self._loop_started.is_set() and self.client.loop_start() == mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError("the fleet service's network loop had ended; started it again")

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
        (through :func:`publish_denylist`)."""
        if delta is not None and delta.to_version != snapshot.version:
            raise ValueError("the delta must lead to the snapshot's version")
        publish_denylist(self.client, delta, snapshot)

    def send_command(self, device_id: str, name: str, args: dict[str, Any] | None = None) -> str:
        command = Command(secrets.token_hex(8), name, dict(args or {}), self.clock())
        self._publish(command_topic(device_id), command.to_json())
        return command.command_id

    def result(self, command_id: str, timeout: float) -> CommandResult | None:
        self.wait(lambda: command_id in self.results, timeout)
        return self.results.get(command_id)

    def wait_for_report(self, device_id: str, version: int,
                        timeout: float) -> ConfigReport | None:
        """The terminal's report once it applied or refused ``version`` (or a later one);
        None when it has not said so within ``timeout`` seconds (an offline terminal takes
        the retained config when it connects)."""
        def reported() -> bool:
            report = self.reports.get(device_id)
            return report is not None and (report.version >= version
                                           or report.refused_version >= version)
        return self.reports[device_id] if self.wait(reported, timeout) else None

    # --- answering -----------------------------------------------------------------------
    #
    # Every handler runs on paho's network thread. An exception escaping one kills that
    # thread, and with it every answer to every terminal, while the process looks alive.
    # So each is wrapped by :meth:`_guarded`: whatever a payload does, it is refused,
    # logged with the device its topic names, counted, and the next message is handled.

    def _guarded(self, handler: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]):
        def guarded(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            kind = _topic_kind(message.topic)
            try:
                handler(client, userdata, message)
            except MessageError as exc:
                self._refuse(kind, message.topic, str(exc))
            except Exception as exc:  # a bug or a failing dependency: still not fatal
                log.exception("%s from %s: handler failed", kind, device_of_topic(message.topic))
                self._refuse(kind, message.topic, f"handler failed: {type(exc).__name__}: {exc}")
        return guarded

    def _refuse(self, kind: str, topic: str, reason: str) -> None:
        device_id = device_of_topic(topic) or "?"
        log.warning("%s from %s refused: %s", kind, device_id, reason[:300])
        with self._counts_lock:
            self.refused[kind] += 1
            self.last_refusal = f"{kind} from {device_id}: {reason[:300]}"

    def progress(self) -> dict[str, Any]:
        """Figures for ``onecard hq status``: connected, answers given, refusals."""
        with self._counts_lock:
            return {"connected": self.connected.is_set(), "answered": sum(self.answered.values()),
                    "refused": sum(self.refused.values()), "last_refusal": self.last_refusal}

    def _on_uid_request(self, client, userdata, message) -> None:
        device_id = device_of_topic(message.topic)
        if device_id is None:
            raise MessageError(f"not a device topic: {message.topic!r}")
        request = UidAuthRequest.from_json(message.payload)
        self.uid_requests.append((device_id, request))
        card_id = credential_card_id(request.kind, request.credential)
        try:
            if self.denylisted(card_id):
                answer = UidAuthResponse(request.request_id, False,
                                         "credential on the denylist (reported lost)")
            else:
                answer = self.authorise(device_id, request)
        except Exception as exc:  # the terminal waits for an answer: give it one
            log.exception("UID authorisation for %s failed", device_id)
            answer = UidAuthResponse(request.request_id, False,
                                     f"HQ could not decide: {type(exc).__name__}")
        client.publish(uid_response_topic(device_id), answer.to_json(), qos=1)
        self._answered("uid")

    def _on_result(self, client, userdata, message) -> None:
        result = CommandResult.from_json(message.payload)
        self.results[result.command_id] = result
        while len(self.results) > self.KEEP:  # a terminal may send results nobody asked for
            self.results.pop(next(iter(self.results)))
        self._answered("result")

    def _on_report(self, client, userdata, message) -> None:
        device_id = device_of_topic(message.topic)
        if device_id is None or not message.payload:
            return  # a retained report cleared
        self.reports[device_id] = ConfigReport.from_json(message.payload)
        self._answered("report")

    def _on_time(self, client, userdata, message) -> None:
        device_id = device_of_topic(message.topic)
        if device_id is None:
            raise MessageError(f"not a device topic: {message.topic!r}")
        sample = TimeSample.from_json(message.payload)
        client.publish(time_response_topic(device_id),
                       TimeSample(sample.device_ms, self.clock()).to_json(), qos=0)
        self._answered("time")

    def _answered(self, kind: str) -> None:
        with self._counts_lock:
            self.answered[kind] += 1
        self._notify()


def _topic_kind(topic: str) -> str:
    """``up/time/request`` for ``onecard/v1/dev/<id>/up/time/request``: what was refused."""
    parts = topic.split("/", 4)
    return parts[4] if len(parts) == 5 else topic[:100]
