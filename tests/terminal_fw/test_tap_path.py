"""The gate's crash-safe tap, step by step, on the in-process chip: what reaches the card
and the disk, in which order, and with how few card commands.

The order is the safety argument of :mod:`terminal_fw.intent`: the block that makes the
card's new state count is sent only after the intent is on disk, and the records are on
disk before the gate may open. The overlaps (intent on disk while the first blocks go to
the card, records on disk while the second copy is written) must never reorder that.
"""

from __future__ import annotations

import threading
import time

import pytest

from protocol.card_ops import take_visit
from terminal_fw.card_memory import CardMemory
from terminal_fw.outbox import Outbox
from terminal_fw.tap import IntentJournal, Status
from tests.card_tx import make_runner
from tests.card_world import CATALOGUE, KEYS, T0
from tests.runtime_world import member_card


class RecordingLink:
    """The chip as a link, logging every command the terminal sends it."""

    def __init__(self, card, log: list[tuple]) -> None:
        self.card = card
        self.log = log

    def uid(self) -> bytes:
        self.log.append(("uid",))
        return self.card.uid()

    def authenticate(self, block, key_type, key) -> None:
        self.log.append(("auth", block, key_type.name))
        self.card.authenticate(block, key_type, key)

    def read_block(self, block) -> bytes:
        self.log.append(("read", block))
        return self.card.read_block(block)

    def write_block(self, block, data) -> None:
        self.log.append(("write", block))
        self.card.write_block(block, data)


class SlowDisk(IntentJournal):
    """A journal whose intents take ``delay`` s to reach the disk, logging when they did."""

    def __init__(self, store, log: list[tuple], delay: float = 0.05) -> None:
        super().__init__(store)
        self.log = log
        self.delay = delay

    def insert(self, intent, row):
        time.sleep(self.delay)
        done = super().insert(intent, row)
        self.log.append(("intent on disk", threading.current_thread().name))
        return done


def gate(tmp_path, log):
    tick = iter(range(1, 1000))
    tx = make_runner(tmp_path, clock=lambda: T0 / 1000 + next(tick) * 3600, accepts=("swim",))
    tx.journal = SlowDisk(tx.outbox, log)
    outbox = tx.outbox
    real_commit = tx._commit

    def commit(intent, status, *args, **kwargs):
        out = real_commit(intent, status, *args, **kwargs)
        log.append(("records on disk", status.value))
        return out

    tx._commit = commit
    return tx, outbox


def test_the_new_state_counts_on_the_card_only_once_its_intent_is_on_disk(tmp_path):
    log: list[tuple] = []
    tx, outbox = gate(tmp_path, log)
    card = member_card()
    result = tx.run(RecordingLink(card, log), take_visit, serve=True)
    assert result.ok and [r.record.visits_after for r in result.records] == [9]

    writes = [i for i, e in enumerate(log) if e[0] == "write"]
    on_disk = log.index(next(e for e in log if e[0] == "intent on disk"))
    recorded = log.index(next(e for e in log if e[0] == "records on disk"))
    # both copies were current (counter equal), so the commit goes to copy 1 (sector 3,
    # blocks 12-14) and the mirror to copy 0 (sector 2, blocks 8-10)
    assert [log[i][1] for i in writes] == [12, 13, 14, 8, 9, 10]
    assert log[on_disk][1].startswith("intent-writer")  # written beside the card I/O...
    assert writes[1] < on_disk < writes[2]  # ...overlapping blocks 12-13, never block 14
    assert recorded > writes[2]  # records only for a state the card holds
    assert log[recorded][1] == Status.COMMITTED.value  # the gate has yet to open
    state = CardMemory(card, KEYS, CATALOGUE).read()
    assert state.both_copies_current and state.state.visits == {"swim": 9}
    tx.served(result)
    assert [i.status for i in tx.journal.unresolved()] == []
    outbox.close()


def test_a_tap_sends_the_card_as_few_commands_as_the_format_allows(tmp_path):
    log: list[tuple] = []
    tx, outbox = gate(tmp_path, log)
    card = member_card()
    assert tx.run(RecordingLink(card, log), take_visit, serve=True).ok
    commands = [e for e in log if e[0] in ("auth", "read", "write")]
    # header with key A, both copies with key B (the last one stays open for the commit),
    # one more authentication for the mirror
    assert [e for e in commands if e[0] == "auth"] == [
        ("auth", 4, "A"), ("auth", 8, "B"), ("auth", 12, "B"), ("auth", 8, "B")]
    assert len(commands) == 4 + 9 + 6
    outbox.close()


def test_a_card_pulled_away_during_the_second_copy_still_counts_once(tmp_path):
    log: list[tuple] = []
    tx, outbox = gate(tmp_path, log)
    card = member_card()
    card.tear_at_write(5, "garbage")  # 12, 13, 14 land; the mirror's block 9 tears
    result = tx.run(RecordingLink(card, log), take_visit, serve=True)
    assert result.ok, result.reason  # the commit stood: the visit is taken and recorded
    card.enter_field()
    read = CardMemory(card, KEYS, CATALOGUE).read()
    assert read.state.visits == {"swim": 9} and not read.both_copies_current
    tx.served(result)
    assert tx.run(RecordingLink(card, log), take_visit, serve=True).ok  # repaired, next visit
    read = CardMemory(card, KEYS, CATALOGUE).read()
    assert read.state.visits == {"swim": 8}
    assert [r.visits_after for r in (s.record for s in outbox.records())] == [9, 8]
    outbox.close()


def test_an_intent_that_cannot_reach_the_disk_stops_the_card_write(tmp_path):
    log: list[tuple] = []
    tx, outbox = gate(tmp_path, log)

    def full(intent, row):
        raise OSError(28, "No space left on device")

    tx.journal.insert = full
    card = member_card()
    with pytest.raises(OSError):
        tx.run(RecordingLink(card, log), take_visit, serve=True)
    assert 14 not in [e[1] for e in log if e[0] == "write"]  # the commit's last block
    card.enter_field()
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 10}
    assert outbox.records() == []
    outbox.close()


def test_intents_kept_by_an_older_terminal_in_its_runtime_store_move_beside_the_outbox(tmp_path):
    from terminal_fw.local_store import LocalStore

    legacy = LocalStore(tmp_path / "runtime.db")
    legacy.execute(
        "CREATE TABLE intents (id TEXT PRIMARY KEY, uid TEXT NOT NULL, operation TEXT NOT NULL,"
        " serve INTEGER NOT NULL, seq_before INTEGER NOT NULL, before TEXT NOT NULL,"
        " after TEXT NOT NULL, records TEXT NOT NULL, status TEXT NOT NULL,"
        " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)")
    state = CardMemory(member_card(), KEYS, CATALOGUE).read().state
    from terminal_fw.tap.journal import state_json as _state_json

    legacy.execute("INSERT INTO intents VALUES ('abc', '11223344', 'take_visit', 1, 0, ?, ?,"
                   " '[]', 'open', 1, 1)", (_state_json(state), _state_json(state)))
    outbox = Outbox(tmp_path / "terminal.db")
    journal = IntentJournal(outbox)
    assert journal.adopt(legacy) == 1
    [moved] = journal.unresolved(bytes.fromhex("11223344"))
    assert (moved.id, moved.status, moved.before) == ("abc", Status.OPEN, state)
    assert journal.adopt(legacy) == 0  # once: the old table is gone
    outbox.close()
    legacy.close()


def test_an_adopted_intent_whose_records_an_older_terminal_already_committed_is_not_recorded_twice(
        tmp_path):
    """Older terminals committed the records, then the intent's status, in two steps; a
    power cut between them, then the upgrade: the records are in the outbox already."""
    from protocol.card_ops import TerminalContext
    from terminal_fw.local_store import LocalStore
    from terminal_fw.tap.journal import state_json as _state_json

    log: list[tuple] = []
    tx, outbox = gate(tmp_path, log)
    state = CardMemory(member_card(), KEYS, CATALOGUE).read().state
    ctx = TerminalContext(device_id="gate-01", store="store-01", chain_id=KEYS.chain_id,
                          now_ms=T0 + 3_600_000)
    done = take_visit(state, catalogue=CATALOGUE, ctx=ctx)
    outbox.append(done.records[0], tx.identity.signing_key)  # committed, status not updated
    legacy = LocalStore(tmp_path / "runtime.db")
    legacy.execute(
        "CREATE TABLE intents (id TEXT PRIMARY KEY, uid TEXT NOT NULL, operation TEXT NOT NULL,"
        " serve INTEGER NOT NULL, seq_before INTEGER NOT NULL, before TEXT NOT NULL,"
        " after TEXT NOT NULL, records TEXT NOT NULL, status TEXT NOT NULL,"
        " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)")
    legacy.execute("INSERT INTO intents VALUES ('old', '11223344', 'take_visit', 1, 0, ?, ?, ?,"
                   " 'written', 1, 1)", (_state_json(state), _state_json(done.state),
                                         f'["{done.records[0].encode().hex()}"]'))
    tx.journal.adopt(legacy)
    tx.recover()
    assert [i.status for i in tx.journal.unresolved()] == [Status.COMMITTED]
    assert len(outbox.records()) == 1
    outbox.close()
    legacy.close()
