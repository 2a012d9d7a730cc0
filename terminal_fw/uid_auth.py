"""UID-only credentials (ID cards, QR codes): HQ decides online, risk caps decide offline.

An ID card or a QR code carries no value, only a number, so the terminal cannot check a
purse: it asks HQ (:class:`~protocol.fleet.UidAuthRequest` over MQTT, answered within
``online_timeout_s``). When HQ cannot answer — no broker, or no answer in time — the
terminal may still let the member in under the configured risk caps, the way payment
terminals store and forward offline transactions under floor limits:

* per credential: at most ``per_credential_count`` uses and ``per_credential_amount_fen``;
* per terminal: at most ``terminal_total_fen`` taken offline in all;
* not at all once the terminal has not heard from HQ for ``max_offline_age_s``.

The exposure counts every offline use whose record HQ has not acknowledged yet; HQ's ack
releases it. Every use taken under a cap is recorded with ``Flag.UNDER_RISK_CAP`` so HQ
can see the risk it carried. A credential on the denylist is refused online and offline.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol.fleet import UidAuthRequest, UidAuthResponse
from protocol.ids import credential_card_id
from protocol.terminal_config import RiskCaps
from terminal_fw.local_store import LocalStore

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class UidDecision:
    approved: bool
    reason: str = ""
    offline: bool = False
    under_cap: bool = False
    approval: str = ""


class UidAuthoriser:
    def __init__(
        self, store: LocalStore, *, publish: Callable[[bytes], bool],
        connected: Callable[[], bool], caps: Callable[[], RiskCaps],
        acked_through: Callable[[], int], denylisted: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.publish = publish
        self.connected = connected
        self.caps = caps
        self.acked_through = acked_through
        self.denylisted = denylisted
        self.clock = clock
        self._pending: dict[str, tuple[threading.Event, list[UidAuthResponse]]] = {}
        self._lock = threading.Lock()
        self.store.execute("CREATE TABLE IF NOT EXISTS uid_offline_uses (id INTEGER PRIMARY KEY,"
                           " card_id TEXT NOT NULL, amount_fen INTEGER NOT NULL,"
                           " seq INTEGER NOT NULL, time_ms INTEGER NOT NULL)")
        last = self.store.get("last_hq_contact_ms")
        self._last_contact_ms = int(last) if last is not None else int(self.clock() * 1000)
        self._last_saved_ms = self._last_contact_ms
        if last is None:
            self.store.put("last_hq_contact_ms", self._last_contact_ms)

    # --- HQ contact -----------------------------------------------------------------

    def heard_from_hq(self) -> None:
        """Any message from HQ (ack, config, answer) proves the terminal is in touch."""
        now = int(self.clock() * 1000)
        self._last_contact_ms = now
        if now - self._last_saved_ms > 5000:  # persisted, but not on every ack
            self._last_saved_ms = now
            try:
                self.store.put("last_hq_contact_ms", now)
            except Exception:  # a full disk must not break the MQTT thread
                log.exception("could not save the time of last HQ contact")

    @property
    def last_contact_ms(self) -> int:
        return self._last_contact_ms

    def on_response(self, payload: bytes) -> None:
        """An answer from HQ (paho's thread): wake the tap waiting for it."""
        try:
            response = UidAuthResponse.from_json(payload)
        except ValueError as exc:
            log.warning("ignoring %s", exc)
            return
        self.heard_from_hq()
        with self._lock:
            waiting = self._pending.get(response.request_id)
        if waiting is not None:
            waiting[1].append(response)
            waiting[0].set()

    # --- deciding -------------------------------------------------------------------

    def authorise(self, kind: str, credential: str, amount_fen: int, *, timeout: float,
                  next_seq: int, purpose: str = "visit") -> UidDecision:
        """Ask HQ, or decide under the caps. ``next_seq`` is the sequence the record of
        this use will get; an offline use is counted against the caps before it is
        recorded, so a crash in between can only overcount, never let more through."""
        card_id = credential_card_id(kind, credential)
        if self.denylisted(card_id):
            return UidDecision(False, "credential on the denylist (reported lost)")
        if self.connected():
            answer = self._ask(kind, credential, amount_fen, purpose, timeout)
            if answer is not None:
                return UidDecision(answer.approved, answer.reason, approval=answer.approval)
        return self._offline(card_id, amount_fen, next_seq)

    def _ask(self, kind: str, credential: str, amount_fen: int, purpose: str,
             timeout: float) -> UidAuthResponse | None:
        request = UidAuthRequest(secrets.token_hex(8), credential, kind, amount_fen, purpose,
                                 int(self.clock() * 1000))
        event: threading.Event = threading.Event()
        box: list[UidAuthResponse] = []
        with self._lock:
            self._pending[request.request_id] = (event, box)
        try:
            if not self.publish(request.to_json()):
                return None
            if not event.wait(timeout):
                log.info("HQ did not answer UID authorisation in %.1f s: deciding offline",
                         timeout)
                return None
            return box[0]
        finally:
            with self._lock:
                self._pending.pop(request.request_id, None)

    def _offline(self, card_id: str, amount_fen: int, next_seq: int) -> UidDecision:
        caps = self.caps()
        now_ms = int(self.clock() * 1000)
        age_s = (now_ms - self._last_contact_ms) / 1000
        if age_s > caps.max_offline_age_s:
            return UidDecision(False, f"offline for {int(age_s)} s, longer than allowed "
                               f"({caps.max_offline_age_s} s): HQ must approve", offline=True)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM uid_offline_uses WHERE seq <= ?", (self.acked_through(),))
            count, spent = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM uid_offline_uses "
                "WHERE card_id = ?", (card_id,)).fetchone()
            (total,) = conn.execute(
                "SELECT COALESCE(SUM(amount_fen), 0) FROM uid_offline_uses").fetchone()
            refusal = ""
            if count + 1 > caps.per_credential_count:
                refusal = f"offline limit of {caps.per_credential_count} uses for this credential"
            elif spent + amount_fen > caps.per_credential_amount_fen:
                refusal = (f"offline limit of {caps.per_credential_amount_fen} fen for this "
                           "credential")
            elif total + amount_fen > caps.terminal_total_fen:
                refusal = f"this terminal's offline limit of {caps.terminal_total_fen} fen"
            if not refusal:
                conn.execute("INSERT INTO uid_offline_uses (card_id, amount_fen, seq, time_ms) "
                             "VALUES (?, ?, ?, ?)", (card_id, amount_fen, next_seq, now_ms))
        if refusal:
            return UidDecision(False, refusal + ": HQ must approve", offline=True)
        return UidDecision(True, "", offline=True, under_cap=True)

    def exposure(self) -> tuple[int, int]:
        """(uses, fen) taken offline and not yet acknowledged by HQ."""
        self.store.execute("DELETE FROM uid_offline_uses WHERE seq <= ?", (self.acked_through(),))
        row = self.store.execute(
            "SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM uid_offline_uses").fetchone()
        return int(row[0]), int(row[1])
