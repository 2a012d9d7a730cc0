"""The tap runner: carries a card operation out crash-safely — intent first, then the
card, then the record.

Every value-changing card operation goes through :meth:`TapRunner.run`:

1. read the card; settle an earlier unfinished write of this card first
   (:func:`terminal_fw.tap.settle.settle`);
2. check the denylist and decide (:data:`protocol.card_ops.OPERATIONS`);
3. write an **intent** durably (:mod:`terminal_fw.tap.journal`): the card's state before
   and after, and the records. This runs on a writer thread while the first blocks of
   the new state copy go to the card; the copy's last block, the one that makes the new
   state count, is sent only once the intent is on disk;
4. finish the card's commit (:class:`terminal_fw.card_memory.CardMemory`, tear-safe);
5. on the writer thread, mark the intent *written* (not waited for), then sign the
   records into the outbox together with the intent's new status, in one durable
   transaction (:class:`terminal_fw.tap.recorder.Recorder`); meanwhile the card's second
   state copy is brought up to date;
6. the role serves (opens the gate, prints the receipt), then :meth:`TapRunner.served`
   marks the intent *done* (not waited for).

Two waits for the disk per tap (steps 3 and 5), each overlapped with card I/O.
The status marks that are not waited for are the ones recovery can work out again from
the outbox and the card; the next durable commit carries them to disk anyway.

A power cut can stop this anywhere. :meth:`TapRunner.recover` (at start),
:meth:`TapRunner.run` (the card's next tap) and :meth:`TapRunner.report_unconfirmed`
(the card stays away) carry out the settling rules of :mod:`terminal_fw.tap.settle`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from protocol.card_format import CardFormatError, CardRead
from protocol.card_ops import CardNeed, Done, TerminalContext, card_operation, check_denylist
from protocol.card_state import CardState, Refusal, RefusalReason
from protocol.keys import ChainKeys
from protocol.mifare import CardRemoved, MifareClassicLink, SectorAuthFailed
from protocol.record import SignedRecord, decode_wire
from protocol.terminal_config import TerminalConfig
from terminal_fw.card_memory import CardMemory, WriteStatus
from terminal_fw.failpoints import failpoint
from terminal_fw.identity import DeviceIdentity
from terminal_fw.outbox import Outbox
from terminal_fw.tap.journal import Intent, IntentJournal, Status
from terminal_fw.tap.recorder import Recorder
from terminal_fw.tap.settle import Settlement, Then, settle, settle_at_start, settle_unseen

log = logging.getLogger(__name__)


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
class TapResult:
    """What a card operation came to, for the role that serves the member."""

    ok: bool  # serve the member (open the gate, hand over the goods)
    reason: str = ""
    records: tuple[SignedRecord, ...] = ()
    state: CardState | None = None  # the card after the operation (or as read)
    intent: Intent | None = None  # to mark served once the member is served
    free: bool = False  # served for an earlier tap that was paid but not served
    refusal: Refusal | None = None
    retry: bool = False  # the card left mid-way: tap again


class TapRunner:
    """Runs card operations crash-safely; one at a time per terminal."""

    def __init__(self, identity: DeviceIdentity, outbox: Outbox, journal: IntentJournal,
                 keys: ChainKeys, *, config: Callable[[], TerminalConfig],
                 denylist: Callable[[], Collection[str]], offline: Callable[[], bool],
                 guard: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.time, operator: str = "",
                 writer: Executor | None = None) -> None:
        self.identity = identity
        self.outbox = outbox
        self.journal = journal
        self.recorder = Recorder(identity, outbox)
        self.keys = keys
        self.config = config
        self.denylist = denylist
        self.offline = offline
        self.guard = guard
        self.clock = clock
        self.operator = operator
        self.lock = threading.RLock()
        #: runs the disk writes that overlap card I/O; a thread of its own unless given
        #: (the deterministic simulator passes one that it schedules itself)
        self._intent_writer: Executor | None = writer

    def context(self, cfg: TerminalConfig, operator: str | None = None,
                accepts: tuple[str, ...] | None = None) -> TerminalContext:
        return TerminalContext(
            device_id=self.identity.device_id, store=self.identity.store,
            chain_id=self.keys.chain_id, now_ms=int(self.clock() * 1000),
            operator=self.operator if operator is None else operator,
            utc_offset_minutes=cfg.utc_offset_minutes, gate_group=cfg.gate.group,
            accepts=cfg.gate.accepts if accepts is None else accepts, offline=self.offline())

    # --- the records --------------------------------------------------------------------

    def _commit(self, intent: Intent, status: Status, flags: int = 0,
                extra: dict[str, Any] | None = None) -> tuple[tuple[SignedRecord, ...], Intent]:
        """Sign the intent's records into the outbox and give the intent ``status``, in one
        durable transaction: the records are never on disk without their intent's mark."""
        with self.outbox.transaction() as conn:
            signed = self.recorder.sign(intent.records, conn=conn, flags=flags, extra=extra)
            intent = self.journal.set_status(intent, status, conn=conn)
        return signed, intent

    def _apply(self, intent: Intent, action: Settlement) -> tuple[tuple[SignedRecord, ...], Intent]:
        """Carry out a settling rule's answer for ``intent``."""
        if action.sign:
            assert action.status is not None
            return self._commit(intent, action.status, action.flags, action.extra)
        if action.status is not None:
            intent = self.journal.set_status(intent, action.status)
        return (), intent

    def recover(self) -> None:
        """At start: settle intents whose outcome is known without the card."""
        with self.lock:
            for intent in self.journal.unresolved():
                action = settle_at_start(intent, self._in_outbox(intent))
                self._apply(intent, action)
                if action.sign:
                    log.info("intent %s: card written before the power cut; records "
                             "committed now", intent.id)

    def _in_outbox(self, intent: Intent) -> bool:
        """Whether the intent's records are already in the outbox, right after the sequence
        number it was opened at (an older terminal appended them there, under the lock)."""
        if not intent.records or intent.status not in (Status.OPEN, Status.WRITTEN):
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
                action = settle_unseen(intent, now, int(older_than_s * 1000))
                self._apply(intent, action)
                if action.status is Status.REPORTED:
                    reported += 1
                    log.warning("intent %s reported to HQ as unconfirmed", intent.id)
        return reported

    # --- a tap ------------------------------------------------------------------------------

    def served(self, result: TapResult) -> None:
        """The member got what the records say (gate opened, receipt printed). Not waited
        for: a power cut leaves the intent *committed*, which lets the same card through
        once more without charge only within ``SERVE_GRACE_S`` and showing the same state."""
        if result.intent is not None:
            self.journal.set_status(result.intent, Status.DONE, durable=False)

    def _read(self, memory: CardMemory) -> CardRead | Refusal | None:
        """The card's state; None for a card that is not ours yet (blank)."""
        try:
            return memory.read(for_write=True)
        except SectorAuthFailed:
            return None
        except CardFormatError as exc:
            if exc.reason is RefusalReason.NOT_ONECARD:
                return None
            return exc.refusal()

    def run(self, link: MifareClassicLink, operation: str | Callable[..., Any], *args: Any,
            serve: bool = False, operator: str | None = None,
            accepts: tuple[str, ...] | None = None, **kwargs: Any) -> TapResult:
        """Read, settle an earlier unfinished write of this card, decide, write, commit.

        ``operation`` is a card operation of :data:`protocol.card_ops.OPERATIONS` (its
        name or its function: ``take_visit``, ``debit``, ``recharge``, ``add_visits``,
        ``issue``, ``read_balance``, ...). Raises CardRemoved only if the card left
        before anything was decided.
        """
        op = card_operation(operation)
        with self.lock:
            cfg = self.config()
            if cfg.version == 0:
                return TapResult(False, "no configuration from HQ yet")
            ctx = self.context(cfg, operator, accepts)
            memory = CardMemory(link, self.keys, cfg.catalogue)
            uid = bytes(link.uid())
            read = self._read(memory)
            if isinstance(read, Refusal):
                return TapResult(False, str(read), refusal=read)
            state = read.state if read is not None else None
            for pending in self.journal.unresolved(uid):
                settled = self._settle(pending, state)
                if settled is not None:
                    return settled
            if op.needs is CardNeed.BLANK_OR_RECALLED:
                outcome: Done | Refusal = op.run(state, *args, catalogue=cfg.catalogue, ctx=ctx,
                                                 **kwargs)
            elif read is None:
                refusal = Refusal(RefusalReason.NOT_ONECARD, "the card refuses this chain's keys")
                return TapResult(False, str(refusal), refusal=refusal)
            else:
                listed = check_denylist(read.state, self.denylist(), ctx=ctx)
                if listed is None:
                    outcome = op.run(read.state, *args, catalogue=cfg.catalogue, ctx=ctx, **kwargs)
                    if not op.writes and isinstance(outcome, Done):
                        return TapResult(True, "", state=outcome.state)
                else:
                    outcome = listed
            if isinstance(outcome, Refusal):
                return TapResult(False, str(outcome), state=state, refusal=outcome)
            blocked = self.guard()
            if blocked:
                return TapResult(False, blocked, state=state)
            personalise = op.needs is CardNeed.BLANK_OR_RECALLED or read is None
            return self._write(memory, read, state, uid, outcome, serve, op.name, personalise)

    def close(self) -> None:
        """Stop the intent writer thread (the stores are their owner's to close)."""
        if self._intent_writer is not None:
            self._intent_writer.shutdown(wait=True)
            self._intent_writer = None

    def _writer(self) -> Executor:
        if self._intent_writer is None:
            self._intent_writer = ThreadPoolExecutor(1, thread_name_prefix="intent-writer")
        return self._intent_writer

    def _write(self, memory: CardMemory, read: CardRead | None, state: CardState | None,
               uid: bytes, done: Done, serve: bool, op_name: str, personalise: bool) -> TapResult:
        serve = serve and done.refusal is None
        intent, row = self.journal.prepare(uid, op_name, state, done, serve=serve,
                                           seq_before=self.outbox.last_seq)
        memory.link = _FailpointLink(memory.link)  # type: ignore[assignment]
        if personalise:  # header, both copies, our keys
            self.journal.insert(intent, row)
            failpoint("tap:intent")
            try:
                memory.personalise(done.state)
                status = WriteStatus.WRITTEN
            except CardRemoved:
                status = WriteStatus.UNCONFIRMED
        else:
            assert read is not None
            # The intent goes to disk while the first blocks of the new copy go to the card.
            pending: Future[Intent] = self._writer().submit(self.journal.insert, intent, row)

            def intent_on_disk() -> None:
                pending.result()  # a failed intent write stops the card write here
                failpoint("tap:intent")

            try:
                status = memory.write(read, done.state, before_last=intent_on_disk, mirror=False)
            finally:
                pending.result()
        if status is WriteStatus.NOT_WRITTEN:
            self.journal.set_status(intent, Status.ABANDONED, durable=False)
            return TapResult(False, "card removed before the write: nothing charged", state=state,
                             retry=True)
        if status is WriteStatus.UNCONFIRMED:
            return TapResult(False, "card removed during the write: tap again", state=state,
                             retry=True)
        final = Status.COMMITTED if serve else Status.DONE

        def record() -> tuple[tuple[SignedRecord, ...], Intent]:
            self.journal.set_status(intent, Status.WRITTEN, durable=False)
            failpoint("tap:card_written")
            return self._commit(intent, final)

        # The records go to disk while the card's second copy is brought up to date.
        committing = self._writer().submit(record)
        try:
            memory.write_mirror()
        finally:
            signed, committed = committing.result()
        failpoint("tap:committed")
        if done.refusal is not None:
            return TapResult(False, str(done.refusal), signed, done.state, refusal=done.refusal)
        return TapResult(True, "", signed, done.state, committed if serve else None)

    def _settle(self, pending: Intent, state: CardState | None) -> TapResult | None:
        """An earlier write of this card did not finish: settle it by what the card shows.

        Returns a result when the earlier tap is what this tap comes to (its records are
        now committed and the member is served for it), or None to go on with this tap.
        """
        action = settle(pending, state, int(self.clock() * 1000))
        signed, pending = self._apply(pending, action)
        if action.then is Then.SERVE:
            if action.sign:
                log.info("intent %s: the card holds the new state; recorded now", pending.id)
            return TapResult(True, "", signed, state, pending, free=True)
        if action.then is Then.COMPLETED:
            log.info("intent %s: the card holds the new state; recorded now", pending.id)
            return TapResult(True, "completed an earlier interrupted write", signed, state,
                             free=True)
        return None
