"""One terminal for gates, staff handhelds and kiosks; the role is configuration.

:class:`Runtime` puts the parts together: the identity from enrolment, the outbox and
uplink, the local store with config, denylist, intent journal and offline UID usage,
the HQ link (:mod:`terminal_fw.runtime.hq_link`), the reader loops
(:mod:`terminal_fw.runtime.readers`) and the role (:mod:`terminal_fw.roles`). It serves
every tap alone (offline first) and talks to HQ when it can.

A role sees the runtime only through :class:`terminal_fw.roles.host.TerminalHost`: run a
card operation, authorise a UID credential, hold a card for a UI, emit an event, check
the guard. That interface is the public part of this class; the rest is assembly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from protocol.card_ops import TerminalContext, uid_visit
from protocol.mifare import CardRemoved, MifareClassicLink
from protocol.record import SignedRecord
from protocol.terminal_config import TerminalConfig
from terminal_fw.config_sync import ConfigSync
from terminal_fw.denylist import Denylist
from terminal_fw.identity import DeviceIdentity, load_or_create
from terminal_fw.local_store import LocalStore, StorageFull, disk_free_bytes, is_storage_full
from terminal_fw.outbox import Outbox
from terminal_fw.presence import PresenceReporter
from terminal_fw.roles import ROLE_CLASSES, Role
from terminal_fw.runtime.hq_link import HqLink
from terminal_fw.runtime.readers import ReaderLoops
from terminal_fw.runtime.settings import ROLES, RuntimeSettings, load_chain_keys, software_version
from terminal_fw.sessions import CardSession, CardSessions
from terminal_fw.tap import IntentJournal, Status, TapResult, TapRunner
from terminal_fw.trusted_clock import ClockWentBack, TrustedClock
from terminal_fw.uid_auth import UidAuthoriser, credential_card_id
from terminal_fw.uplink import Uplink

log = logging.getLogger(__name__)


class Runtime:
    """Everything one terminal runs; :meth:`start` it, :meth:`stop` it cleanly."""

    def __init__(self, settings: RuntimeSettings, *, clock: Callable[[], float] = time.time,
                 pin_factory: Any = None) -> None:
        self.settings = settings
        self.identity, self.role_name, host, port, tls = self._who_am_i(settings)
        if self.role_name not in ROLES:
            raise RuntimeError(f"unknown role {self.role_name!r} (one of {', '.join(ROLES)})")
        self.keys = load_chain_keys(settings.secrets_dir)
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        # Everything the terminal stamps runs on HQ's time once learnt, and never earlier
        # than a time already used (terminal_fw.trusted_clock; the guard refuses taps).
        self.trusted_clock = TrustedClock(data, system=clock)
        clock = self.trusted_clock.now
        self.clock = clock
        self.outbox = Outbox(data / "terminal.db")
        self.store = LocalStore(data / "runtime.db", max_pages=settings.store_max_pages)
        self.config = ConfigSync(self.store, clock=clock)
        self.denylist = Denylist(self.store)
        self.journal = IntentJournal(self.outbox, clock=clock)
        if moved := self.journal.adopt(self.store):
            log.info("moved %d intents from the runtime store into the outbox's file", moved)
        self.maintenance = self.store.get("maintenance", "0") == "1"
        self.storage_alarm = ""
        self.clock_offset_ms = 0
        self.refused_messages = 0  # downlink messages a handler could not take
        self.readers: dict[str, str] = {}  # reader name → ok / absent / error, for presence
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = False

        device_id = self.identity.device_id
        password = settings.broker_password
        self.uplink = Uplink(device_id, self.outbox, host=host, port=port,
                             password=password or "", resend_after=settings.resend_after_s)
        if password is None and tls:
            from terminal_fw.enrolment import mqtt_tls_context

            self.uplink.client.tls_set_context(mqtt_tls_context(settings.secrets_dir))
        self.client = self.uplink.client
        self.uid = UidAuthoriser(
            self.store, publish=lambda payload: self.hq.publish_uid_request(payload),
            connected=self.online, caps=lambda: self.config.current.risk_caps,
            acked_through=lambda: self.outbox.acked_through,
            denylisted=lambda card_id: card_id in self.denylist, clock=clock)
        self.taps = TapRunner(
            self.identity, self.outbox, self.journal, self.keys,
            config=lambda: self.config.current, denylist=self.denylist.cards,
            offline=lambda: not self.online(), guard=self.guard, clock=clock)
        self.presence = PresenceReporter(self.store, self.client, device_id,
                                         describe=self.describe, health=self.health,
                                         clock=clock)
        self.presence.attach()
        self.hq = HqLink(self)
        self.sessions = CardSessions()
        self.role: Role = ROLE_CLASSES[self.role_name](self, pin_factory=pin_factory)
        self.reader_loops = ReaderLoops(self)

    # --- identity ---------------------------------------------------------------------

    @staticmethod
    def _who_am_i(s: RuntimeSettings) -> tuple[DeviceIdentity, str, str, int, bool]:
        enrolment = Path(s.secrets_dir) / "enrolment.json"
        if enrolment.exists():
            from terminal_fw.enrolment import load_enrolment

            e = load_enrolment(s.secrets_dir)
            ident = load_or_create(s.secrets_dir, e.device_id, e.store)
            return (ident, s.role or e.role, s.broker_host or e.broker_host,
                    int(s.broker_port or e.broker_port), True)
        ident_file = Path(s.secrets_dir) / "identity.json"
        if not (s.device_id or ident_file.exists()):
            raise RuntimeError(f"{s.secrets_dir} holds no enrolment: run `onecard terminal enrol`")
        saved = json.loads(ident_file.read_text()) if ident_file.exists() else {}
        ident = load_or_create(s.secrets_dir, s.device_id or saved["device_id"],
                               s.store or saved.get("store", ""))
        if not s.broker_port:
            raise RuntimeError("no broker: enrol the terminal or set [broker] host and port")
        return ident, s.role or "gate", s.broker_host or "127.0.0.1", int(s.broker_port), False

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Runtime:
        self.taps.recover()
        self.uplink.start()
        self.spawn(self._housekeeping, "housekeeping")
        self.reader_loops.start()
        self.started = True
        self.emit("ready", role=self.role_name, config_version=self.config.current.version,
                  denylist_version=self.denylist.version, bdseq=self.presence.bdseq)
        return self

    def stop(self, clean: bool = True) -> None:
        """Stop serving; with ``clean`` tell HQ we go offline on purpose first."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.role.stop()
        self.sessions.close_all()
        if clean and self.uplink.connected.is_set():
            self.presence.publish_clean_death()
        self.uplink.stop()
        for t in self._threads:
            t.join(timeout=5)
        with self.taps.lock:  # a tap in progress finishes before the stores close
            self.taps.close()
            self.outbox.close()
            self.store.close()

    def spawn(self, target: Callable[[], None], name: str) -> None:
        """A daemon thread of this terminal, joined (briefly) at :meth:`stop`."""
        t = threading.Thread(target=target, name=f"{self.device_id}-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def apply_check_in(self, answer: dict[str, Any]) -> None:
        """HQ's check-in answer (terminal_fw.join.check_in): its time, the store's config
        if newer. Card keys were written before this runtime loaded them."""
        if answer.get("hq_time_ms"):
            self.trusted_clock.set_from_hq(int(answer["hq_time_ms"]))
        if answer.get("store_config"):
            self.config.offer(answer["store_config"])

    # --- what roles may ask (terminal_fw.roles.host.TerminalHost) ---------------------------

    def current_config(self) -> TerminalConfig:
        return self.config.current

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def emit(self, event: str, **data: Any) -> None:
        """A decision or state change, for the log and whoever watches (tests, a UI)."""
        log.info("%s %s", event, json.dumps(data, sort_keys=True, default=str))
        if self.settings.events is not None:
            self.settings.events({"event": event, **data})

    def online(self) -> bool:
        return self.uplink.connected.is_set()

    def guard(self) -> str | None:
        """Why the terminal must not take value right now, or None."""
        if self.maintenance:
            return "terminal in maintenance"
        try:
            self.trusted_clock.check()
        except ClockWentBack as exc:
            return str(exc)
        free = disk_free_bytes(Path(self.settings.data_dir))
        if free < self.settings.reserve_bytes:
            self._alarm(f"disk nearly full: {free} bytes free")
        if self.storage_alarm:
            return f"local storage full, records cannot be kept: {self.storage_alarm}"
        return None

    def exclusive(self) -> AbstractContextManager[Any]:
        """Hold the terminal's card lock: no other card operation runs meanwhile, and a
        shutdown waits until it is released."""
        return self.taps.lock

    def card(self, link: MifareClassicLink, operation: Any, *args: Any,
             serve: bool = False, **kwargs: Any) -> TapResult:
        """One crash-safe card operation; a full disk refuses it with the alarm raised."""
        try:
            result = self.taps.run(link, operation, *args, serve=serve, **kwargs)
        except CardRemoved:
            return TapResult(False, "card removed", retry=True)
        except Exception as exc:
            if self.check_storage(exc):
                return TapResult(False, f"local storage full: {exc}")
            raise
        if result.records:
            self.uplink.notify()
        return result

    def served(self, result: TapResult) -> None:
        """The member got what ``result`` paid for (the gate turned, the goods handed over)."""
        self.taps.served(result)

    def passage_settled(self, intent_prefix: str, *, owed: bool) -> None:
        """The passage a paid entry opened is over (terminal_fw.passage.entry_spent): an
        entry still owed goes back to *committed*, which the settling rules honour at the
        card's next tap within SERVE_GRACE_S; one used up is *done*. ``intent_prefix`` is
        the start of the intent's id, as the I/O board's passage reference carries it."""
        if len(intent_prefix) < 12 or not all(c in "0123456789abcdef" for c in intent_prefix):
            return
        with self.taps.lock:
            row = self.outbox.execute("SELECT id FROM intents WHERE substr(id, 1, ?) = ?",
                                      (len(intent_prefix), intent_prefix)).fetchone()
            intent = self.journal.get(row[0]) if row else None
            if intent is None or not intent.serve:
                return
            if owed and intent.status is Status.DONE:
                self.journal.set_status(intent, Status.COMMITTED)
            elif not owed and intent.status is Status.COMMITTED:
                self.journal.set_status(intent, Status.DONE)

    def hold(self, link: MifareClassicLink) -> CardSession:
        """Keep the card on ``link`` for a UI: the reader loop leaves the link open and
        tells the session when the card goes away."""
        return self.sessions.hold(link, self.card)

    def uid_use(self, kind: str, credential: str, amount_fen: int, *, product: str = "",
                operator: str = "") -> tuple[bool, str, SignedRecord | None]:
        """Authorise one use of a UID-only credential and record it (before serving)."""
        cfg = self.config.current
        if cfg.version == 0:
            return False, "no configuration from HQ yet", None
        blocked = self.guard()
        if blocked:
            return False, blocked, None
        card_id = credential_card_id(kind, credential)
        with self.taps.lock:
            try:
                decision = self.uid.authorise(kind, credential, amount_fen,
                                              timeout=cfg.uid.online_timeout_s,
                                              next_seq=self.outbox.last_seq + 1)
                if not decision.approved:
                    return False, decision.reason, None
                ctx = TerminalContext(device_id=self.device_id, store=self.identity.store,
                                      chain_id=self.keys.chain_id, now_ms=self.now_ms(),
                                      operator=operator, offline=decision.offline)
                record = uid_visit(card_id, kind=kind, amount_fen=amount_fen, ctx=ctx,
                                   product=product, under_risk_cap=decision.under_cap,
                                   approval=decision.approval or "")
                [signed] = self.taps.recorder.sign([record])
            except Exception as exc:
                if self.check_storage(exc):
                    return False, f"local storage full: {exc}", None
                raise
        self.uplink.notify()
        return True, "", signed

    # --- storage alarm ------------------------------------------------------------------

    def _alarm(self, why: str) -> None:
        if not self.storage_alarm:
            log.error("STORAGE ALARM: %s", why)
            self.emit("storage_alarm", reason=why)
        self.storage_alarm = why

    def check_storage(self, exc: BaseException) -> bool:
        """Turn a full-disk failure into the alarm; True if that is what it was."""
        if is_storage_full(exc):
            self._alarm(str(exc))
            return True
        return False

    def probe_storage(self) -> None:
        """Clear the alarm once a write succeeds again (space was freed)."""
        try:
            self.store.put("storage_probe", int(self.clock()))
        except StorageFull:
            return
        log.warning("storage alarm cleared")
        self.storage_alarm = ""
        self.emit("storage_ok")

    def set_maintenance(self, on: bool) -> None:
        """In maintenance the terminal refuses every tap (HQ's ``maintenance`` command)."""
        self.maintenance = on
        self.store.put("maintenance", "1" if on else "0")

    # --- housekeeping -------------------------------------------------------------------

    _last_beat = 0.0
    _last_prune = 0.0

    def _housekeeping(self) -> None:
        while not self.stopping.wait(min(1.0, max(0.2, self.config.current.heartbeat_s))):
            try:
                cfg = self.config.current
                if self.online() and self._heartbeat_due(cfg):
                    self.presence.publish_heartbeat()
                if cfg.version:
                    self.taps.report_unconfirmed(cfg.unconfirmed_report_after_s)
                if time.monotonic() - self._last_prune > 3600:
                    self._last_prune = time.monotonic()
                    self.journal.prune(int(self.clock() * 1000) - 7 * 86_400_000)
                if self.storage_alarm and disk_free_bytes(Path(self.settings.data_dir)) > \
                        2 * self.settings.reserve_bytes:
                    self.probe_storage()
            except Exception as exc:
                if not self.check_storage(exc):
                    log.exception("housekeeping round failed")

    def _heartbeat_due(self, cfg: TerminalConfig) -> bool:
        now = time.monotonic()
        if now - self._last_beat >= cfg.heartbeat_s:
            self._last_beat = now
            return True
        return False

    # --- presence figures ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What the birth message says about this terminal."""
        return {"software_version": software_version()[:64], "role": self.role_name,
                "store": self.identity.store, "config_version": self.config.current.version,
                "denylist_version": self.denylist.version, "readers": dict(self.readers)}

    def health(self) -> dict[str, Any]:
        """What each heartbeat says: backlog, clock, disk, readers, alarms."""
        oldest = self.outbox.oldest_pending_ms()
        now = int(self.clock() * 1000)
        readers = dict(self.readers)
        if self.storage_alarm:
            readers["storage"] = "full"
        if self.maintenance:
            readers["mode"] = "maintenance"
        return {"outbox_depth": self.outbox.backlog(),
                "oldest_unsent_age_ms": max(0, now - oldest) if oldest else 0,
                "last_ack_seq": self.outbox.acked_through,
                "disk_free_bytes": disk_free_bytes(Path(self.settings.data_dir)),
                "clock_offset_ms": self.clock_offset_ms, "readers": readers}
