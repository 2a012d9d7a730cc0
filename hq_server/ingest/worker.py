"""Carry device records from the broker into :class:`hq_server.ingest.batch.Ingest`.

The worker subscribes through an MQTT 5 shared subscription, so several workers can
split the load. paho acknowledges each message to the broker as it arrives; that is
fine because the device keeps the record until our own application ack, which is
published only after the batch holding the record is committed.

Beside records, each worker:

* follows every terminal's presence (birth / death / heartbeat) through an ordinary,
  not shared, subscription: retained births are only delivered to ordinary ones, and
  applying the same message twice changes nothing (:mod:`hq_server.devices.presence`);
* asks again for the records a device has not delivered (:func:`hq_server.ingest.acks.gap_report`)
  every ``rerequest_every`` seconds;
* reconciles the cards it has new records for every ``reconcile_every`` seconds;
* publishes every denylist change (an operator's, or a clone's automatic listing) to
  all terminals as a delta plus the retained snapshot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.engine import Engine

from hq_server.backup.archive import AckArchive, ArchiveFailed
from hq_server.clock import Clock, system_clock
from hq_server.devices.denylist import denylist_delta, denylist_snapshot
from hq_server.devices.presence import UnknownDevice, record_presence
from hq_server.fleet.service import publish_denylist
from hq_server.ingest.acks import gap_report
from hq_server.ingest.batch import BatchResult, Ingest, Prepared
from hq_server.ingest.quarantine import QuarantineLimits
from hq_server.ingest.record_rules import RulesConfig
from hq_server.process.supervision import Component, Supervisor
from hq_server.reconciliation.rules import ReconcileConfig
from hq_server.reconciliation.runs import reconcile_due
from protocol.topics import (
    ALL_PRESENCE,
    ALL_RECORDS_SHARED,
    MessageError,
    ack_topic,
    presence_kind,
)

log = logging.getLogger(__name__)


class IngestWorker:
    def __init__(self, engine: Engine, *, host: str, port: int, username: str, password: str,
                 client_id: str = "hq-ingest-1", batch_max: int = 500,
                 batch_wait: float = 0.02, verify_threads: int = 1,
                 reconcile_every: float | None = 2.0,
                 reconcile_config: ReconcileConfig | None = None,
                 rerequest_every: float | None = 10.0, presence: bool = True,
                 denylist_every: float | None = 1.0, rules: RulesConfig | None = None,
                 quarantine_limits: QuarantineLimits | None = None,
                 clock: Clock = system_clock, archive: AckArchive | None = None) -> None:
        self.engine = engine
        self.clock = clock
        # With an archive, a batch's records are fsync'd there before its acks go out.
        self.ingest = Ingest(engine, verify_threads=verify_threads, rules=rules,
                             quarantine_limits=quarantine_limits, clock=clock,
                             archive=archive)
        self.reconcile_every = reconcile_every
        self.reconcile_config = reconcile_config or ReconcileConfig()
        self.rerequest_every = rerequest_every
        self.denylist_every = denylist_every
        self._denylist_sent: int | None = None
        self._denylist_lock = threading.Lock()
        self.presence = presence
        self.presence_inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.totals = BatchResult()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._prepared: queue.Queue = queue.Queue(maxsize=2)
        self.supervisor: Supervisor | None = None
        self._own_supervisor = True
        self.last_batch_ms: int | None = None
        self.last_batch_size = 0
        self.last_side_round_ms: int | None = None
        self.client_id = client_id
        self.host, self.port = host, port
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self.connected.clear()
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.suppress_exceptions = True  # a callback's error is logged, the loop lives on
        client.enable_logger(log)
        self.client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused HQ ingest: %s", reason_code)
            return
        client.subscribe(ALL_RECORDS_SHARED, qos=1)
        if self.presence:
            client.subscribe(ALL_PRESENCE, qos=1)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused HQ's subscription: %s", reason_codes)
        else:
            log.info("HQ ingest subscribed to device records")
            self.subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        if presence_kind(message.topic):
            self.presence_inbox.put((message.topic, bytes(message.payload)))
        else:
            self.inbox.put((message.topic, bytes(message.payload)))

    def start(self, supervisor: Supervisor | None = None) -> IngestWorker:
        """Connect and run the worker's threads under ``supervisor`` (its own when None,
        which restarts a dead thread but writes no health rows)."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 86400  # the broker queues records while we are down
        self.client.connect_async(self.host, self.port, keepalive=15, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor or Supervisor(self.client_id)
        for component in self.components():
            self.supervisor.add(component)
        if self._own_supervisor:
            self.supervisor.start()
        return self

    def components(self) -> list[Component]:
        """The worker's threads, each restarted when it dies (see hq_server.process.supervision).

        None is fatal at its first death: the checking stage holds nothing durable, the
        commit stage acknowledges only committed batches (a batch lost in a crash is
        sent again by its devices), the side loop and paho's network loop start over
        cleanly. A crash loop takes the process down instead (the supervisor's budget).
        """
        return [
            Component("ingest-network", self._watch_network, stop=self._stop.set,
                      progress=lambda: {"connected": self.connected.is_set()}),
            Component("ingest-check", self._run_checks, stop=self._stop.set,
                      progress=lambda: {"records_waiting": self.inbox.qsize()}),
            Component("ingest-commit", self._run, progress=self._commit_progress,
                      stop=self._stop.set),
            Component("ingest-side", self._run_side, stop=self._stop.set,
                      progress=lambda: {"last_side_round_ms": self.last_side_round_ms}),
        ]

    def _commit_progress(self) -> dict:
        return {"batches_waiting": self._prepared.qsize(),
                "presence_waiting": self.presence_inbox.qsize(),
                "posted": self.totals.posted, "duplicates": self.totals.duplicates,
                "last_batch_ms": self.last_batch_ms, "last_batch_size": self.last_batch_size}

    def _watch_network(self) -> None:
        """paho's network thread, watched: a loop that ended while we run is a death.

        paho's ``loop_start`` refuses to start a second loop while one runs, so calling
        it is the check; when it succeeds the old loop had ended, and we say so (the
        new one already runs, reconnecting with the broker-held session).
        """
        while not self._stop.wait(0.5):
            if self.client.loop_start() == mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError("paho's network loop had ended; started it again")

    def stop(self) -> None:
        self._stop.set()
        if self.supervisor is not None:
            self.supervisor.stop()  # the process is ending: no restarts from here on
            self.supervisor.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()
        self.ingest.close()

    def _next_batch(self) -> list[tuple[str, bytes]]:
        try:
            batch = [self.inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            try:
                batch.append(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run_checks(self) -> None:
        """Stage 1: signatures and devices, one batch ahead of the database stage."""
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            try:
                prepared = self.ingest.prepare(batch)
            except Exception:
                log.exception("checking a batch of %d failed; devices will resend", len(batch))
                time.sleep(0.5)
                continue
            while not self._stop.is_set():
                try:
                    self._prepared.put((len(batch), prepared), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _run(self) -> None:
        """Stage 2: commit, then acknowledge. Ed25519 and SQLite both release the GIL,
        so the two stages overlap on two cores."""
        while not self._stop.is_set():
            self._take_presence()
            try:
                size, prepared = self._prepared.get(timeout=0.2)
            except queue.Empty:
                continue
            self.commit_and_acknowledge(size, prepared)

    def commit_and_acknowledge(self, size: int, prepared: Prepared) -> None:
        """Commit a checked batch, then publish each device's ack: never before the
        commit (and the archive of acknowledged records), since a device deletes what
        its ack covers."""
        try:
            results = [self.ingest.commit(prepared)]
        except ArchiveFailed:
            raise  # committed but not archived: acknowledge nothing (a crash loop)
        except Exception:
            # Nothing of the batch is committed and nothing is acked. Try its records
            # one by one, so one that cannot be stored (a bug, a full disk) does not
            # hold back the others; what still fails stays on its device, which
            # sends it again.
            log.exception("ingest batch of %d failed; trying its records one by one", size)
            results = self._one_by_one(prepared)
        self.last_batch_ms, self.last_batch_size = self.clock(), size
        for result in results:
            self.totals.posted += result.posted
            self.totals.duplicates += result.duplicates
            self.totals.rejected.update(result.rejected)
            for device_id, ack in result.acks.items():
                self.client.publish(ack_topic(device_id), ack.to_json(), qos=1)

    def _one_by_one(self, prepared: Prepared) -> list[BatchResult]:
        results = []
        singles = [Prepared([s], [], prepared.registry) for s in prepared.verified]
        if prepared.rejected:
            singles.append(Prepared([], prepared.rejected, prepared.registry))
        for single in singles:
            try:
                results.append(self.ingest.commit(single))
            except ArchiveFailed:
                raise
            except Exception:
                what = single.verified[0].record if single.verified else None
                log.exception("record %s#%s cannot be stored; its device will resend it",
                              what.device_id if what else "?", what.seq if what else "?")
                time.sleep(0.1)
        return results

    def _take_presence(self) -> None:
        while True:
            try:
                topic, payload = self.presence_inbox.get_nowait()
            except queue.Empty:
                return
            try:
                record_presence(self.engine, topic, payload, now_ms=self.clock())
            except (MessageError, UnknownDevice) as exc:
                log.warning("presence message on %s ignored: %s", topic, exc)
            except Exception:
                log.exception("presence message on %s failed", topic)

    def _run_side(self) -> None:
        """Reconciliation, gap re-requests and the denylist broadcast, off the ingest thread."""
        next_reconcile = next_rerequest = next_denylist = time.monotonic()
        while not self._stop.wait(0.2):
            now = time.monotonic()
            self.last_side_round_ms = self.clock()
            try:
                if self.denylist_every is not None and now >= next_denylist and self.connected.is_set():
                    next_denylist = now + self.denylist_every
                    self.publish_denylist_changes()
                if self.reconcile_every is not None and now >= next_reconcile:
                    next_reconcile = now + self.reconcile_every
                    self.reconcile_once()
                if self.rerequest_every is not None and now >= next_rerequest:
                    next_rerequest = now + self.rerequest_every
                    for device_id, ack in gap_report(self.engine).items():
                        log.info("asking %s again for records %s", device_id, ack.missing[:10])
                        self.client.publish(ack_topic(device_id), ack.to_json(), qos=1)
            except Exception:
                log.exception("reconciliation or gap re-request failed; trying again later")

    def reconcile_once(self) -> int:
        """Reconcile the cards that are due. Returns how many were."""
        summary = reconcile_due(self.engine, self.reconcile_config, clock=self.clock)
        if summary.denylist_deltas:
            self.publish_denylist_changes()
        return summary.cards

    def publish_denylist_changes(self) -> None:
        """Send terminals what changed on the denylist since we last sent it.

        Whoever changed it (an operator through the CLI or API, reconciliation on a
        clone), the change reaches every online terminal within ``denylist_every``
        seconds. At start the retained snapshot is (re)published. With several workers
        each sends the delta; a terminal applies a delta only from its own version, so
        a repeat changes nothing.
        """
        with self._denylist_lock:
            snapshot = denylist_snapshot(self.engine)
            if self._denylist_sent is None:
                publish_denylist(self.client, None, snapshot)
            elif snapshot.version > self._denylist_sent:
                publish_denylist(self.client, denylist_delta(self.engine, self._denylist_sent),
                                 snapshot)
            self._denylist_sent = snapshot.version
