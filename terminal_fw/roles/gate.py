"""The gate role: where a tap at a turnstile is decided.

An entry reader takes a visit (or accepts a time pass, a free ticket): the decision is
:func:`protocol.card_ops.take_visit`, run crash-safely by the terminal's tap runner
(:mod:`terminal_fw.tap.runner`); the turnstile opens only once the record is durable.
An exit reader opens for any valid card of ours (or always, ``gate.exit = "free"``).
ID cards and QR codes on serial readers go through UID authorisation. Anti-passback
works across the gate group through the card itself. Outside the opening hours HQ
configured, every entry is refused.

The door is a :class:`terminal_fw.passage.GateDoor`: the Pi's own GPIO pins or the RP2040
I/O board (``gate_io`` in the local settings); the role behaves the same with either.
A paid entry is marked served once its passage is over and the rule for a passage not
taken (:func:`terminal_fw.passage.entry_spent`, HQ's ``gate.not_taken``) says it is used.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from protocol.card_ops import read_balance, take_visit
from protocol.mifare import MifareClassicLink
from terminal_fw.failpoints import failpoint
from terminal_fw.passage import GateDoor, PassageReport, entry_spent
from terminal_fw.roles.base import Role
from terminal_fw.roles.host import TerminalHost
from terminal_fw.tap import TapResult
from terminal_fw.uid_auth import credential_card_id

log = logging.getLogger(__name__)
#: How much of a tap's intent id an opening's reference carries (hex digits).
INTENT_PREFIX = 12


class GateRole(Role):
    """Entry and exit readers, a turnstile relay, anti-passback across the gate group."""

    def __init__(self, host: TerminalHost, *, pin_factory: Any = None) -> None:
        super().__init__(host, pin_factory=pin_factory)
        self.io = self._door(host, pin_factory)
        self._admitting = threading.Lock()
        self.opened = 0

    def _door(self, host: TerminalHost, pin_factory: Any) -> GateDoor:
        """The door back-end the local settings name (``gate_io``)."""
        settings = host.settings
        if settings.gate_io == "ioboard":
            from terminal_fw.ioboard import IoBoard

            board = dict(settings.ioboard or {})
            return IoBoard(board.pop("port"), baudrate=int(board.pop("baudrate", 115200)),
                           admit_timeout=settings.admit_timeout_s, on_report=self._late_report,
                           on_event=lambda name, data: host.emit(f"ioboard_{name}", **data))
        from terminal_fw.gate_io import GateIO, GateWiring

        gpio = dict(settings.gpio or {})
        mock = gpio.pop("mock", False)
        if mock and pin_factory is None:
            from gpiozero.pins.mock import MockFactory

            pin_factory = MockFactory()
        return GateIO(GateWiring(**gpio), pin_factory=pin_factory,
                      admit_timeout=settings.admit_timeout_s)

    def stop(self) -> None:
        if self._admitting.acquire(timeout=self.host.settings.admit_timeout_s + 2):
            self._admitting.release()  # the passage in progress is over
        self.io.close()

    def _release(self, paid: TapResult | None = None, card: str | None = None) -> None:
        """Open the turnstile for one passage without holding up the readers; when it is
        over, settle the paid entry ``paid`` by the rule for a passage not taken."""
        self.opened += 1
        intent = paid.intent if paid is not None else None
        # Each opening has its own reference (an entry kept after a passage not taken is
        # opened again); a paid one starts with its intent's id, which a late report,
        # even after a restart, is settled by.
        ref = (intent.id[:INTENT_PREFIX] if intent is not None else secrets.token_hex(6)) + \
            secrets.token_hex(2)

        def admit() -> None:
            with self._admitting:
                try:
                    report = self.io.pass_one(ref)
                except Exception:
                    log.exception("turnstile")
                    return
                self._passage_over(report, paid, card)

        threading.Thread(target=admit, daemon=True, name="admit").start()

    def _passage_over(self, report: PassageReport, paid: TapResult | None,
                      card: str | None) -> None:
        rule = self.host.current_config().gate.not_taken
        spent = entry_spent(report.outcome, rule)
        owed = paid is not None and paid.intent is not None and spent is False
        if owed:  # settled first: whoever hears of the passage may tap again at once
            assert paid is not None and paid.intent is not None
            self.host.passage_settled(paid.intent.id[:INTENT_PREFIX], owed=True)
        self.host.emit("passage", ref=report.ref, outcome=report.outcome.value,
                       reason=report.reason, card=card, late=report.late, entry_owed=owed,
                       records=[s.record.seq for s in paid.records] if paid else [])

    def _late_report(self, report: PassageReport) -> None:
        """The board reported a passage after its opening was given up on (a cable
        fault, a timeout, the terminal's restart): settle the entry by the report."""
        spent = entry_spent(report.outcome, self.host.current_config().gate.not_taken)
        if spent is not None:
            self.host.passage_settled(report.ref[:INTENT_PREFIX], owed=not spent)
        self.host.emit("passage", ref=report.ref, outcome=report.outcome.value,
                       reason=report.reason, card=None, late=True, entry_owed=spent is False,
                       records=[])

    def open_by_operator(self, operator: str) -> None:
        self.host.emit("gate_open", direction="entry", card=None, by=operator, free=True)
        self._release()

    def _closed_now(self) -> bool:
        cfg = self.host.current_config()
        return bool(cfg.version) and not cfg.is_open(self.host.now_ms())

    def on_card(self, link: MifareClassicLink, direction: str) -> None:
        with self.host.exclusive():  # one tap at a time, and a shutdown waits for it
            if direction == "exit":
                self._exit(link)
            else:
                self._entry(link)

    def _exit(self, link: MifareClassicLink) -> None:
        host = self.host
        if host.current_config().gate.exit == "free":
            host.emit("gate_open", direction="exit", card=None, free=True)
            self._release()
            return
        result = host.card(link, read_balance)
        if result.ok:
            host.emit("gate_open", direction="exit",
                      card=result.state.card_id if result.state else None, free=True)
            self._release()
        else:
            host.emit("refused", direction="exit", reason=result.reason)
            self.io.refuse()

    def _entry(self, link: MifareClassicLink) -> None:
        host = self.host
        if self._closed_now():
            host.emit("refused", direction="entry", reason="closed: outside opening hours")
            self.io.refuse()
            return
        result = host.card(link, take_visit, serve=True)
        if not result.ok:
            host.emit("refused", direction="entry", reason=result.reason, retry=result.retry,
                      card=result.state.card_id if result.state else None)
            self.io.refuse()
            return
        failpoint("tap:before_open")
        state = result.state
        # Served as the door opens (a second tap meanwhile is not another free entry);
        # a passage not taken may give the entry back (_passage_over).
        host.served(result)
        self._release(result, state.card_id if state else None)
        host.emit("gate_open", direction="entry", card=state.card_id if state else None,
                  free=result.free, visits=dict(state.visits) if state else {},
                  records=[s.record.seq for s in result.records])

    def on_uid(self, kind: str, value: str) -> None:
        host = self.host
        if self._closed_now():
            host.emit("refused", direction="entry", reason="closed: outside opening hours")
            self.io.refuse()
            return
        cfg = host.current_config()
        ok, reason, signed = host.uid_use(kind, value, cfg.uid.visit_amount_fen)
        card = credential_card_id(kind, value)
        if not ok:
            host.emit("refused", direction="entry", reason=reason, card=card)
            self.io.refuse()
            return
        assert signed is not None
        host.emit("gate_open", direction="entry", card=card, free=False,
                  flags=signed.record.flags, records=[signed.record.seq])
        self._release()
