"""The gate role: where a tap at a turnstile is decided.

An entry reader takes a visit (or accepts a time pass, a free ticket): the decision is
:func:`protocol.card_ops.take_visit`, run crash-safely by the terminal's tap runner
(:mod:`terminal_fw.tap.runner`); the turnstile opens only once the record is durable.
An exit reader opens for any valid card of ours (or always, ``gate.exit = "free"``).
ID cards and QR codes on serial readers go through UID authorisation. Anti-passback
works across the gate group through the card itself. Outside the opening hours HQ
configured, every entry is refused.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from protocol.card_ops import read_balance, take_visit
from protocol.mifare import MifareClassicLink
from terminal_fw.failpoints import failpoint
from terminal_fw.roles.base import Role
from terminal_fw.roles.host import TerminalHost
from terminal_fw.uid_auth import credential_card_id

log = logging.getLogger(__name__)


class GateRole(Role):
    """Entry and exit readers, a turnstile relay, anti-passback across the gate group."""

    def __init__(self, host: TerminalHost, *, pin_factory: Any = None) -> None:
        super().__init__(host, pin_factory=pin_factory)
        from terminal_fw.gate_io import GateIO, GateWiring

        gpio = dict(host.settings.gpio or {})
        mock = gpio.pop("mock", False)
        if mock and pin_factory is None:
            from gpiozero.pins.mock import MockFactory

            pin_factory = MockFactory()
        self.io = GateIO(GateWiring(**gpio), pin_factory=pin_factory,
                         admit_timeout=host.settings.admit_timeout_s)
        self._admitting = threading.Lock()
        self.opened = 0

    def stop(self) -> None:
        if self._admitting.acquire(timeout=self.host.settings.admit_timeout_s + 2):
            self._admitting.release()  # the passage in progress is over
        self.io.close()

    def _release(self) -> None:
        """Open the turnstile for one passage without holding up the readers."""
        self.opened += 1

        def admit() -> None:
            with self._admitting:
                try:
                    self.io.admit()
                except Exception:
                    log.exception("turnstile")

        threading.Thread(target=admit, daemon=True, name="admit").start()

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
        self._release()
        host.served(result)
        state = result.state
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
