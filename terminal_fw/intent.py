"""Crash-safe card transactions: intent first, then the card, then the record.

Every value-changing tap goes through :class:`CardTransactions.run`:

1. read the card and decide (:mod:`protocol.card_ops`);
2. write an **intent** durably: the card's state before and after, and the records.
   This runs on a writer thread while the first blocks of the new state copy go to the
   card; the copy's last block, the one that makes the new state count, is sent only
   once the intent is on disk;
3. finish the card's commit (:class:`terminal_fw.card_app.CardApp`, tear-safe);
4. on the writer thread, mark the intent *written* (not waited for), then commit the
   records to the outbox together with the intent's new status, in one durable
   transaction; meanwhile the card's second state copy is brought up to date;
5. serve (open the gate, print the receipt), then mark the intent *done* (not waited for).

Two waits for the disk per tap (steps 2 and 4), each overlapped with card I/O.
The status marks that are not waited for are the ones recovery can work out again from
the outbox and the card; the next durable commit carries them to disk anyway.

A power cut can stop this anywhere. On restart :meth:`IntentJournal.recover` settles
what it can alone: an intent whose card write was confirmed gets its records committed
(if the cut came before the commit). An intent whose card write is unknown waits for
the card: at its next tap the card is read first and shows which state it holds, so the
records are committed (and the gate opens without charging again, the member has paid)
or the intent is dropped (the card kept its old state). If the card does not come back
within ``unconfirmed_report_after_s``, the records go to HQ flagged
``UNCONFIRMED_CARD_WRITE`` with both card states in ``extra``, and HQ's reconciliation
settles it when the card is next seen anywhere.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from protocol.card_format import CardFormatError, CardRead
from protocol.card_ops import Done, TerminalContext, check_denylist, issue
from protocol.card_state import CardState, Refusal, RefusalReason
from protocol.keys import ChainKeys
from protocol.mifare import AuthenticationFailed, CardRemoved, MifareClassicLink
from protocol.record import Flag, SignedRecord, TransactionRecord, decode_body, decode_wire
from protocol.terminal_config import TerminalConfig
from terminal_fw.card_app import CardApp, WriteStatus
from terminal_fw.failpoints import failpoint
from terminal_fw.identity import DeviceIdentity
from terminal_fw.local_store import LocalStore
from terminal_fw.outbox import Outbox

log = logging.getLogger(__name__)

#: A paid tap whose gate never opened (power cut) is honoured at the same card's next
#: tap within this many seconds, without charging again.
SERVE_GRACE_S = 600


class Status(enum.Enum):
    OPEN = "open"  # intent durable; whether the card holds the new state is unknown
    WRITTEN = "written"  # the card holds the new state; records not yet committed
    COMMITTED = "committed"  # records in the outbox; the member not yet served
    DONE = "done"
    ABANDONED = "abandoned"  # the card kept its old state: nothing happened
    REPORTED = "reported"  # sent to HQ as unconfirmed
    REPORTED_NOT_LANDED = "reported, not landed"  # ... and the card turned out unchanged


UNRESOLVED = (Status.OPEN, Status.WRITTEN, Status.COMMITTED, Status.REPORTED)


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(CardState))


def _state_json(state: CardState | None) -> str:
    # fields by hand: dataclasses.asdict deep-copies and costs 3x as much, on the tap's path
    fields = {name: getattr(state, name) for name in _STATE_FIELDS} if state is not None else None
    return json.dumps(fields, sort_keys=True)


def _state_of(text: str) -> CardState | None:
    data = json.loads(text)
    return CardState(**data) if data is not None else None


@dataclass(frozen=True)
class Intent:
    id: str
    uid: bytes
    operation: str
    serve: bool
    seq_before: int
    before: CardState | None  # None: a blank card being issued
    after: CardState
    records: tuple[TransactionRecord, ...]
    status: Status
    created_ms: int


class IntentJournal:
    """The durable list of card writes in flight: table ``intents`` beside the outbox.

    ``store`` is the terminal's :class:`~terminal_fw.outbox.Outbox` (anything with its
    ``execute`` and ``transaction`` works): keeping intents in the outbox's file lets a
    tap's records and its intent's status change in one transaction.
    """

    def __init__(self, store: Outbox, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.store.execute(
            "CREATE TABLE IF NOT EXISTS intents (id TEXT PRIMARY KEY, uid TEXT NOT NULL,"
            " operation TEXT NOT NULL, serve INTEGER NOT NULL, seq_before INTEGER NOT NULL,"
            " before TEXT NOT NULL, after TEXT NOT NULL, records TEXT NOT NULL,"
            " status TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)")
        self.store.execute("CREATE INDEX IF NOT EXISTS ix_intents_uid ON intents (uid, status)")

    def adopt(self, legacy: LocalStore) -> int:
        """Move the intents an older terminal kept in its runtime store into this journal
        (once, at start). Returns how many came over."""
        if not legacy.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'intents'").fetchone():
            return 0
        rows = legacy.execute("SELECT * FROM intents").fetchall()
        with self.store.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             rows)
        legacy.execute("DROP TABLE intents")
        return len(rows)

    def prepare(self, uid: bytes, operation: str, before: CardState | None, done: Done, *,
                serve: bool, seq_before: int) -> tuple[Intent, tuple]:
        """A new intent and its row, encoded; :meth:`insert` writes them durably (on another
        thread if need be: it then holds the interpreter only for the SQL)."""
        now = int(self.clock() * 1000)
        intent = Intent(secrets.token_hex(8), uid, operation, serve, seq_before, before,
                        done.state, done.records, Status.OPEN, now)
        row = (intent.id, uid.hex(), operation, int(serve), seq_before, _state_json(before),
               _state_json(done.state), json.dumps([r.encode().hex() for r in done.records]),
               Status.OPEN.value, now, now)
        return intent, row

    def insert(self, intent: Intent, row: tuple) -> Intent:
        with self.store.transaction() as conn:
            conn.execute("INSERT INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return intent

    def set_status(self, intent: Intent, status: Status, *, durable: bool = True,
                   conn: sqlite3.Connection | None = None) -> Intent:
        """Record the intent's new status: in the caller's open transaction ``conn``, or
        in its own (``durable=False``: not waited for, recovery can work it out again)."""
        sql = "UPDATE intents SET status = ?, updated_ms = ? WHERE id = ?"
        params = (status.value, int(self.clock() * 1000), intent.id)
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.store.transaction(durable=durable) as own:
                own.execute(sql, params)
        return replace(intent, status=status)

    def _rows(self, where: str, params: tuple) -> list[Intent]:
        rows = self.store.execute(
            "SELECT id, uid, operation, serve, seq_before, before, after, records, status, "
            f"created_ms FROM intents WHERE {where} ORDER BY created_ms", params).fetchall()
        return [Intent(r[0], bytes.fromhex(r[1]), r[2], bool(r[3]), r[4], _state_of(r[5]),
                       _state_of(r[6]),  # type: ignore[arg-type]
                       tuple(decode_body(bytes.fromhex(h)) for h in json.loads(r[7])),
                       Status(r[8]), r[9]) for r in rows]

    def unresolved(self, uid: bytes | None = None) -> list[Intent]:
        marks = ",".join("?" for _ in UNRESOLVED)
        values = tuple(s.value for s in UNRESOLVED)
        if uid is None:
            return self._rows(f"status IN ({marks})", values)
        return self._rows(f"uid = ? AND status IN ({marks})", (uid.hex(), *values))

    def get(self, intent_id: str) -> Intent | None:
        found = self._rows("id = ?", (intent_id,))
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        rows = self.store.execute("SELECT status, COUNT(*) FROM intents GROUP BY status")
        return {status: n for status, n in rows}

    def prune(self, older_than_ms: int) -> None:
        """Forget settled intents (kept a while for diagnostics)."""
        self.store.execute("DELETE FROM intents WHERE status IN (?, ?, ?) AND updated_ms < ?",
                           (Status.DONE.value, Status.ABANDONED.value,
                            Status.REPORTED_NOT_LANDED.value, older_than_ms))


class _FailpointLink:
    """The card link with a failpoint after each block write (for the crash tests)."""

    def __init__(self, link: MifareClassicLink) -> None:
        self._link = link

    def write_block(self, block: int, data: bytes) -> None:
        self._link.write_block(block, data)
        failpoint("card:write_block")

    def write_blocks(self, block: int, data: bytes) -> None:
        count = len(data) // 16
        if not hasattr(self._link, "write_blocks"):
            for i in range(count):
                self.write_block(block + i, data[16 * i:16 * (i + 1)])
            return
        self._link.write_blocks(block, data)
        for _ in range(count):
            failpoint("card:write_block")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)


@dataclass(frozen=True)
class TxResult:
    """What a card transaction came to, for the role that serves the member."""

    ok: bool  # serve the member (open the gate, hand over the goods)
    reason: str = ""
    records: tuple[SignedRecord, ...] = ()
    state: CardState | None = None  # the card after the transaction (or as read)
    intent: Intent | None = None  # to mark served once the member is served
    free: bool = False  # served for an earlier tap that was paid but not served
    refusal: Refusal | None = None
    retry: bool = False  # the card left mid-way: tap again


class CardTransactions:
    """Runs card operations crash-safely; one at a time per terminal."""

    def __init__(self, identity: DeviceIdentity, outbox: Outbox, journal: IntentJournal,
                 keys: ChainKeys, *, config: Callable[[], TerminalConfig],
                 denylist: Callable[[], Collection[str]], offline: Callable[[], bool],
                 guard: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.time, operator: str = "") -> None:
        self.identity = identity
        self.outbox = outbox
        self.journal = journal
        self.keys = keys
        self.config = config
        self.denylist = denylist
        self.offline = offline
        self.guard = guard
        self.clock = clock
        self.operator = operator
        self.lock = threading.RLock()
        self._intent_writer: ThreadPoolExecutor | None = None

    def context(self, cfg: TerminalConfig, operator: str | None = None,
                accepts: tuple[str, ...] | None = None) -> TerminalContext:
        return TerminalContext(
            device_id=self.identity.device_id, store=self.identity.store,
            chain_id=self.keys.chain_id, now_ms=int(self.clock() * 1000),
            operator=self.operator if operator is None else operator,
            utc_offset_minutes=cfg.utc_offset_minutes, gate_group=cfg.gate.group,
            accepts=cfg.gate.accepts if accepts is None else accepts, offline=self.offline())

    # --- the records --------------------------------------------------------------------

    def _commit(self, intent: Intent, status: Status, extra_flags: int = 0,
                extra: dict[str, Any] | None = None) -> tuple[tuple[SignedRecord, ...], Intent]:
        """Sign the intent's records into the outbox and give the intent ``status``, in one
        durable transaction: the records are never on disk without their intent's mark."""
        signed = []
        with self.outbox.transaction() as conn:
            for r in intent.records:
                if extra_flags or extra:
                    r = replace(r, flags=r.flags | extra_flags, extra={**r.extra, **(extra or {})})
                signed.append(self.outbox.append_in(conn, r, self.identity.signing_key))
            intent = self.journal.set_status(intent, status, conn=conn)
        return tuple(signed), intent

    def recover(self) -> None:
        """At start: settle intents whose outcome is known without the card."""
        with self.lock:
            for intent in self.journal.unresolved():
                final = Status.COMMITTED if intent.serve else Status.DONE
                if intent.status in (Status.OPEN, Status.WRITTEN) and self._in_outbox(intent):
                    # only an intent adopted from an older terminal, which committed the
                    # records and the intent's status in two steps: never record it twice
                    self.journal.set_status(intent, final)
                elif intent.status is Status.WRITTEN:  # card written before the power cut
                    self._commit(intent, final)
                    log.info("intent %s: card written before the power cut; records "
                             "committed now", intent.id)

    def _in_outbox(self, intent: Intent) -> bool:
        """Whether the intent's records are already in the outbox, right after the sequence
        number it was opened at (the older terminal appended them there, under the lock)."""
        if not intent.records:
            return False
        wanted = {(r.card_id, r.operation, r.card_counter, r.device_time_ms)
                  for r in intent.records}
        for pending in self.outbox.pending(limit=len(intent.records), after_seq=intent.seq_before):
            r = decode_wire(pending.wire).record
            if (r.card_id, r.operation, r.card_counter, r.device_time_ms) in wanted:
                return True
        return False

    def report_unconfirmed(self, older_than_s: float) -> int:
        """Send HQ the intents whose card has not come back: both states, flagged."""
        now = int(self.clock() * 1000)
        reported = 0
        with self.lock:
            for intent in self.journal.unresolved():
                if now - intent.created_ms < older_than_s * 1000:
                    continue
                if intent.status is Status.OPEN:
                    self._commit(intent, Status.REPORTED, int(Flag.UNCONFIRMED_CARD_WRITE), {
                        "unconfirmed": {"intent": intent.id, "card_before": _brief(intent.before),
                                        "card_after": _brief(intent.after)}})
                    reported += 1
                    log.warning("intent %s reported to HQ as unconfirmed", intent.id)
                elif intent.status is Status.COMMITTED and now - intent.created_ms > SERVE_GRACE_S * 1000:
                    self.journal.set_status(intent, Status.DONE)
        return reported

    # --- a tap ------------------------------------------------------------------------------

    def served(self, result: TxResult) -> None:
        """The member got what the records say (gate opened, receipt printed). Not waited
        for: a power cut leaves the intent *committed*, which lets the same card through
        once more without charge only within ``SERVE_GRACE_S`` and showing the same state."""
        if result.intent is not None:
            self.journal.set_status(result.intent, Status.DONE, durable=False)

    def _read(self, app: CardApp) -> CardRead | Refusal | None:
        """The card's state; None for a card that is not ours yet (blank)."""
        try:
            return app.read(for_write=True)
        except AuthenticationFailed:
            return None
        except CardFormatError as exc:
            if exc.reason is RefusalReason.NOT_ONECARD:
                return None
            return exc.refusal()

    def run(self, link: MifareClassicLink, operation: Callable[..., Any], *args: Any,
            serve: bool = False, operator: str | None = None,
            accepts: tuple[str, ...] | None = None, **kwargs: Any) -> TxResult:
        """Read, settle an earlier unfinished write of this card, decide, write, commit.

        ``operation`` is a :mod:`protocol.card_ops` function (``take_visit``, ``debit``,
        ``recharge``, ``add_visits``, ``issue``, ...). Raises CardRemoved only if the card
        left before anything was decided.
        """
        with self.lock:
            cfg = self.config()
            if cfg.version == 0:
                return TxResult(False, "no configuration from HQ yet")
            ctx = self.context(cfg, operator, accepts)
            app = CardApp(link, self.keys, cfg.catalogue)
            uid = bytes(link.uid())
            read = self._read(app)
            if isinstance(read, Refusal):
                return TxResult(False, str(read), refusal=read)
            state = read.state if read is not None else None
            for pending in self.journal.unresolved(uid):
                settled = self._settle(pending, state)
                if settled is not None:
                    return settled
            if operation is issue:
                outcome: Done | Refusal | None = issue(state, *args, catalogue=cfg.catalogue,
                                                       ctx=ctx, **kwargs)
            elif read is None:
                refusal = Refusal(RefusalReason.NOT_ONECARD, "the card refuses this chain's keys")
                return TxResult(False, str(refusal), refusal=refusal)
            else:
                outcome = check_denylist(read.state, self.denylist(), ctx=ctx)
                if outcome is None:
                    if operation is check_denylist:
                        return TxResult(True, "", state=read.state)
                    outcome = operation(read.state, *args, catalogue=cfg.catalogue, ctx=ctx,
                                        **kwargs)
            if isinstance(outcome, Refusal):
                return TxResult(False, str(outcome), state=state, refusal=outcome)
            assert outcome is not None
            blocked = self.guard()
            if blocked:
                return TxResult(False, blocked, state=state)
            return self._write(app, read, state, uid, outcome, serve, getattr(operation, "__name__", "op"))

    def _writer(self) -> ThreadPoolExecutor:
        if self._intent_writer is None:
            self._intent_writer = ThreadPoolExecutor(1, thread_name_prefix="intent-writer")
        return self._intent_writer

    def _write(self, app: CardApp, read: CardRead | None, state: CardState | None, uid: bytes,
               done: Done, serve: bool, op_name: str) -> TxResult:
        serve = serve and done.refusal is None
        intent, row = self.journal.prepare(uid, op_name, state, done, serve=serve,
                                           seq_before=self.outbox.last_seq)
        app.link = _FailpointLink(app.link)  # type: ignore[assignment]
        if op_name == "issue" or read is None:  # personalise: header, both copies, our keys
            self.journal.insert(intent, row)
            failpoint("tap:intent")
            try:
                app.personalise(done.state)
                status = WriteStatus.WRITTEN
            except CardRemoved:
                status = WriteStatus.UNCONFIRMED
        else:
            # The intent goes to disk while the first blocks of the new copy go to the card.
            pending: Future[Intent] = self._writer().submit(self.journal.insert, intent, row)

            def intent_on_disk() -> None:
                pending.result()  # a failed intent write stops the card write here
                failpoint("tap:intent")

            try:
                status = app.write(read, done.state, before_last=intent_on_disk, mirror=False)
            finally:
                pending.result()
        if status is WriteStatus.NOT_WRITTEN:
            self.journal.set_status(intent, Status.ABANDONED, durable=False)
            return TxResult(False, "card removed before the write: nothing charged", state=state,
                            retry=True)
        if status is WriteStatus.UNCONFIRMED:
            return TxResult(False, "card removed during the write: tap again", state=state,
                            retry=True)
        final = Status.COMMITTED if serve else Status.DONE

        def record() -> tuple[tuple[SignedRecord, ...], Intent]:
            self.journal.set_status(intent, Status.WRITTEN, durable=False)
            failpoint("tap:card_written")
            return self._commit(intent, final)

        # The records go to disk while the card's second copy is brought up to date.
        committing = self._writer().submit(record)
        try:
            app.write_mirror()
        finally:
            signed, committed = committing.result()
        failpoint("tap:committed")
        if done.refusal is not None:
            return TxResult(False, str(done.refusal), signed, done.state, refusal=done.refusal)
        return TxResult(True, "", signed, done.state, committed if serve else None)

    def _settle(self, pending: Intent, state: CardState | None) -> TxResult | None:
        """An earlier write of this card did not finish: see what the card says.

        Returns a result when the earlier tap is what this tap comes to (its records are
        now committed and the member is served for it), or None to go on with this tap.
        """
        landed = state is not None and state == pending.after
        unchanged = state == pending.before
        if pending.status is Status.WRITTEN:  # the records could not be committed earlier
            _, pending = self._commit(pending, Status.COMMITTED)
        if pending.status is Status.OPEN:
            if landed:
                final = Status.COMMITTED if pending.serve else Status.DONE
                signed, pending = self._commit(pending, final)
                log.info("intent %s: the card holds the new state; recorded now", pending.id)
                if not pending.serve:
                    return TxResult(True, "completed an earlier interrupted write", signed,
                                    state, free=True)
                return TxResult(True, "", signed, state, pending, free=True)
            if unchanged:
                self.journal.set_status(pending, Status.ABANDONED)
                return None
            self._commit(pending, Status.REPORTED, int(Flag.UNCONFIRMED_CARD_WRITE), {
                "unconfirmed": {"intent": pending.id, "card_before": _brief(pending.before),
                                "card_after": _brief(pending.after), "card_now": _brief(state)}})
            return None
        if pending.status is Status.REPORTED:
            self.journal.set_status(pending, Status.DONE if landed or not unchanged
                                    else Status.REPORTED_NOT_LANDED)
            return None
        if pending.status is Status.COMMITTED:
            fresh = int(self.clock() * 1000) - pending.created_ms < SERVE_GRACE_S * 1000
            if landed and fresh and pending.serve:
                return TxResult(True, "", (), state, pending, free=True)
            self.journal.set_status(pending, Status.DONE)
        return None


def _brief(state: CardState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"counter": state.counter, "purse_fen": state.purse_fen, "visits": dict(state.visits),
            "blocked": state.blocked}


