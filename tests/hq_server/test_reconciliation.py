"""Reconciliation: clones, rollbacks, forged top-ups and late denylist hits are caught.

The rule cases run on plain data; the end-to-end cases drive real gates
(``tests.hq_records.VisitGate`` with its durable outbox and signing key) tapping simulated
cards, send their signed records through HQ ingest, and reconcile on both stores.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from hq_server.db.tables import card_reconciliation
from hq_server.devices.denylist import (
    DenylistPeriod,
    add_to_denylist,
    denylist_delta,
    denylist_snapshot,
    remove_from_denylist,
)
from hq_server.devices.registry import add_device
from hq_server.ingest.batch import ingest_all
from hq_server.ledger.check import check_ledger
from hq_server.reconciliation.rules import CardEvent, LedgerView, ReconcileConfig, reconcile_card
from hq_server.reconciliation.runs import open_anomalies, reconcile_card_in_db, reconcile_due
from hq_server.reports.figures import account_balance
from protocol.card_state import CardState
from protocol.record import Flag, Operation
from protocol.topics import records_topic
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox
from tests.hq_records import (
    STORES,
    Card,
    CountCard,
    Till,
    VisitGate,
    add_visits,
    known_store,
    store_engine,
)

T0 = 1_700_000_000_000


def ev(device: str, seq: int, counter: int, op: Operation = Operation.TAKE_VISIT, *,
       purse: tuple[int, int] = (0, 0), visits: tuple[int, int] = (0, 0), product: str = "swim",
       t: int | None = None, flags: int = 0) -> CardEvent:
    return CardEvent(device, seq, counter, op, product, purse[0], purse[1], visits[0], visits[1],
                     T0 + (t if t is not None else counter * 1000), flags, "store-a")


def kinds(report) -> list[tuple[str, str]]:
    return [(a.kind, a.severity) for a in report.anomalies]


SOLD = ev("pos", 1, 1, Operation.ADD_VISITS, visits=(0, 5))


# --- the rules, on plain data -------------------------------------------------------------


def test_an_honest_card_history_has_no_anomaly():
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4)), ev("g2", 1, 3, visits=(4, 3)),
              ev("pos", 2, 4, Operation.RECHARGE, purse=(0, 1000), product=""),
              ev("pos", 3, 5, Operation.DEBIT, purse=(1000, 400), product="")]
    report = reconcile_card("M1", reversed(events), LedgerView(400, {"swim": 3}))
    assert report.anomalies == []
    assert (report.card_purse, report.card_visits, report.card_counter) == (400, {"swim": 3}, 5)
    assert report.divergence_fen == 0


def test_the_same_counter_from_two_devices_is_a_clone():
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4), t=10), ev("g2", 7, 2, visits=(5, 4), t=20)]
    report = reconcile_card("M1", events, LedgerView())
    assert kinds(report) == [("clone", "high")]
    clone = report.anomalies[0]
    assert {r["record"] for r in clone.evidence["records"]} == {"g1#1", "g2#7"}
    assert "g1, g2" in clone.summary


def test_the_same_counter_twice_from_one_device_is_a_rollback():
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4)), ev("g1", 2, 3, visits=(4, 3)),
              ev("g1", 3, 2, visits=(5, 4), t=9000)]  # the dump from counter 1 put back
    report = reconcile_card("M1", events, LedgerView())
    assert ("rollback", "high") in kinds(report)
    keys = {a.key for a in report.anomalies}
    assert "rollback:M1:2" in keys  # the repeated counter
    assert "rollback:M1:g1#3" in keys  # and the device saw the counter go down


def test_value_no_record_explains_is_a_forged_topup():
    events = [SOLD, ev("g1", 1, 2, visits=(50, 49))]  # 5 sold, the card shows 50
    report = reconcile_card("M1", events, LedgerView())
    assert kinds(report) == [("forged_topup", "high")]
    assert report.anomalies[0].evidence["explained_visits"] == 5
    purse = [ev("g1", 1, 1, Operation.DEBIT, purse=(90_000, 80_000), product="")]
    assert kinds(reconcile_card("M2", purse, LedgerView())) == [("forged_topup", "high")]


def test_a_rise_across_missing_counters_is_medium_until_the_records_arrive():
    late = ev("pos", 9, 2, Operation.ADD_VISITS, visits=(5, 15))
    use = ev("g1", 1, 3, visits=(15, 14))
    early = reconcile_card("M1", [SOLD, use], LedgerView())
    assert kinds(early) == [("forged_topup", "medium")]
    assert reconcile_card("M1", [SOLD, use, late], LedgerView()).anomalies == []


def test_value_lost_without_a_record_is_low_and_a_recall_is_not_a_rollback():
    lost = [SOLD, ev("g1", 1, 2, visits=(3, 2))]
    assert kinds(reconcile_card("M1", lost, LedgerView())) == [("unrecorded_loss", "low")]
    recall = [SOLD, ev("pos", 2, 2, Operation.RECALL, product="", t=5),
              ev("pos", 3, 2, Operation.RECALL, visits=(5, 0), t=5)]
    assert reconcile_card("M1", recall, LedgerView()).anomalies == []


def test_a_counter_reused_after_an_unconfirmed_write_is_only_low():
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4), flags=int(Flag.UNCONFIRMED_CARD_WRITE), t=10),
              ev("g1", 2, 2, visits=(5, 4), t=20)]
    assert kinds(reconcile_card("M1", events, LedgerView())) == [("unconfirmed_write", "low")]


def test_a_counter_reused_at_another_gate_after_an_unconfirmed_write_is_not_a_clone():
    """Found by the simulator (seed 2): a card pulled away mid-write at g1 and used at g2
    before g1 reported the write as unconfirmed is one card, not two copies."""
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4), flags=int(Flag.UNCONFIRMED_CARD_WRITE), t=10),
              ev("g2", 1, 2, visits=(5, 4), t=20)]
    assert kinds(reconcile_card("M1", events, LedgerView())) == [("unconfirmed_write", "low")]
    both_sure = [SOLD, ev("g1", 1, 2, visits=(5, 4), t=10), ev("g2", 1, 2, visits=(5, 4), t=20)]
    assert kinds(reconcile_card("M1", both_sure, LedgerView())) == [("clone", "high")]


def test_two_unconfirmed_writes_of_one_counter_at_two_terminals_are_not_a_clone():
    """Found by the simulator (seeds 187, 1000137): a top-up torn at the kiosk, then an
    entry at the gate from the state the card kept, torn as well. Neither terminal could
    confirm its write; one card explains both, so it is low, not a clone."""
    unsure = int(Flag.UNCONFIRMED_CARD_WRITE)
    events = [SOLD, ev("k1", 1, 2, Operation.RECHARGE, purse=(0, 500), product="", flags=unsure,
                       t=10),
              ev("g1", 1, 2, visits=(5, 4), flags=unsure, t=20),
              ev("k1", 2, 3, Operation.RECHARGE, purse=(0, 500), product="", t=30)]
    assert kinds(reconcile_card("M1", events, LedgerView())) == [("unconfirmed_write", "low")]


def test_a_write_confirmed_only_by_reading_the_card_back_is_not_a_clone():
    """Found by the simulator (seed 1000256): the power went at g2 mid-write; the card
    then took the same entry at g1 in the same minute (the same bytes g2 meant to
    write); g2, back up, read that state and took it for its own write. One card."""
    readback = int(Flag.CONFIRMED_ON_READBACK)
    events = [SOLD, ev("g2", 1, 2, visits=(5, 4), flags=readback, t=10),
              ev("g1", 1, 2, visits=(5, 4), t=20)]
    assert kinds(reconcile_card("M1", events, LedgerView())) == [("unconfirmed_write", "low")]
    # Read back a state the other write did not leave: two copies after all.
    differs = [SOLD, ev("g2", 1, 2, visits=(5, 4), flags=readback, t=10),
               ev("g1", 1, 2, Operation.RECHARGE, purse=(0, 500), product="", t=20)]
    assert kinds(reconcile_card("M1", differs, LedgerView()))[0] == ("clone", "high")


def test_the_value_line_goes_on_from_the_write_that_landed_not_the_unconfirmed_one():
    """Found by the simulator (seed 33): an unconfirmed visit that never landed, then a
    top-up from the card's real state; the next visit starts from that real state."""
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4), flags=int(Flag.UNCONFIRMED_CARD_WRITE), t=10),
              ev("k1", 1, 2, Operation.RECHARGE, purse=(0, 500), product="", t=20),
              ev("p1", 1, 3, Operation.DEBIT, purse=(500, 400), product="", t=30),
              ev("g2", 1, 4, purse=(400, 400), visits=(5, 4), t=40)]
    assert kinds(reconcile_card("M1", events, LedgerView())) == [("unconfirmed_write", "low")]


def test_the_value_line_goes_on_from_the_write_that_landed_when_both_leave_the_same_purse():
    """Found by the simulator (seed 3767): an unconfirmed visit that never landed and a
    debit of an empty purse share counter 9, and both leave the purse at 0, so the purse
    cannot tell which the next write (a top-up, no visits) followed. The visit after it
    starts from the visits the debit left; the line must keep both possibilities."""
    events = [SOLD, ev("g2", 1, 2, visits=(5, 4), flags=int(Flag.UNCONFIRMED_CARD_WRITE), t=10),
              ev("t1", 1, 2, Operation.DEBIT, product="", t=20),
              ev("k1", 1, 3, Operation.RECHARGE, purse=(0, 500), product="", t=30),
              ev("g1", 1, 4, purse=(500, 500), visits=(5, 4), t=40)]
    assert kinds(reconcile_card("M1", events, LedgerView())) == [("unconfirmed_write", "low")]
    # A visit count neither write left is still a forged top-up.
    forged = [*events[:4], ev("g1", 1, 4, purse=(500, 500), visits=(6, 5), t=40)]
    assert ("forged_topup", "high") in kinds(reconcile_card("M1", forged, LedgerView()))


def test_use_after_the_loss_report_is_a_late_denylist_hit():
    lost_at = T0 + 2500
    events = [SOLD, ev("g1", 1, 2, visits=(5, 4)), ev("g1", 2, 3, visits=(4, 3), flags=1),
              ev("g2", 1, 4, visits=(3, 2))]
    report = reconcile_card("M1", events, LedgerView(),
                            [DenylistPeriod(lost_at, T0 + 3500, "lost"),
                             DenylistPeriod(T0 + 3900, None, "lost again")])
    assert [(a.key, a.severity) for a in report.anomalies] == [
        ("late_denylist_hit:M1:g1#2", "medium"),  # offline: the gate could not know
        ("late_denylist_hit:M1:g2#1", "high"),  # online: the gate should have refused
    ]


# --- real gates, real records, through HQ --------------------------------------------------


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


class Site:
    """A store with a till selling visits and gates admitting members, all signing."""

    def __init__(self, engine, tmp_path) -> None:
        self.engine = engine
        self.tmp = tmp_path
        self.till = Till("pos-01", "store-a").register(engine)
        self.gates: dict[str, VisitGate] = {}
        self.clock = T0 / 1000

    def gate(self, device_id: str, *, offline: bool = True) -> VisitGate:
        ident = load_or_create(self.tmp / device_id / "secrets", device_id, "store-a")
        add_device(self.engine, device_id, ident.public_key_hex,
                   known_store(self.engine, "store-a"), "gate")
        gate = VisitGate(ident, Outbox(self.tmp / device_id / "outbox.db"), "swim",
                    clock=self.tick, offline=lambda: offline)
        self.gates[device_id] = gate
        return gate

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    def sell_card(self, card_id: str, visits: int) -> CountCard:
        card = Card(card_id)
        self.till.clock_ms = int(self.tick() * 1000)
        ingest_all(self.engine, [self.till.message(add_visits(self.till, card, "swim", visits, 5000))])
        return CountCard(CardState(card_id=card_id, visits=dict(card.visits), counter=card.counter))

    def upload(self) -> None:
        """Every gate's outbox reaches HQ (as when the gates come back online)."""
        msgs = [(records_topic(g.identity.device_id), p.wire)
                for g in self.gates.values() for p in g.outbox.pending()]
        ingest_all(self.engine, msgs)


def test_a_cloned_card_used_at_two_offline_gates_is_caught_and_denylisted(engine, tmp_path):
    site = Site(engine, tmp_path)
    g1, g2 = site.gate("gate-01"), site.gate("gate-02")
    card = site.sell_card("M1", 3)
    clone = CountCard(card.read())  # the card image copied onto a blank card
    for _ in range(3):
        assert g1.tap(card).opened
        assert g2.tap(clone).opened  # offline, the second gate cannot know
    site.upload()
    check = check_ledger(engine)
    assert check.balanced, check.problems
    assert -account_balance(engine, "card:M1:visits:swim", "visit:swim") == 0
    assert account_balance(engine, "card:M1:unbacked_visits:swim", "visit:swim") == 3

    summary = reconcile_due(engine, ReconcileConfig(auto_denylist_clones=True))
    found = open_anomalies(engine, "M1")
    assert {a["kind"] for a in found} == {"clone"}
    assert len(found) == 3 and all(a["severity"] == "high" for a in found)
    devices = {r["record"].split("#")[0] for r in found[0]["evidence"]["records"]}
    assert devices == {"gate-01", "gate-02"}
    assert len(summary.denylist_deltas) == 1  # one card, listed once
    delta = summary.denylist_deltas[0]
    assert [e.card_id for e in delta.added] == ["M1"] and delta.to_version > delta.from_version
    assert [e.card_id for e in denylist_snapshot(engine).cards] == ["M1"]

    # Reconciling again finds nothing new and lists nothing twice.
    again = reconcile_due(engine, ReconcileConfig(auto_denylist_clones=True))
    assert again.cards == 0 and again.new_anomalies == []


def test_a_card_loaded_by_hand_is_a_forged_topup(engine, tmp_path):
    site = Site(engine, tmp_path)
    gate = site.gate("gate-01")
    card = site.sell_card("M1", 2)
    # Someone with a card writer puts 40 visits on the card (same counter, valid MAC).
    state = card.read()
    card.write(CardState(card_id="M1", visits={"swim": 40}, counter=state.counter))
    for _ in range(3):
        assert gate.tap(card).opened
    site.upload()
    summary = reconcile_due(engine)
    assert [(a.kind, a.severity) for a in summary.new_anomalies] == [("forged_topup", "high")]
    anomaly = open_anomalies(engine, "M1")[0]
    assert anomaly["evidence"]["explained_visits"] == 2
    assert anomaly["evidence"]["record"]["visits"] == ["swim", 40, 39]
    with engine.connect() as conn:
        row = conn.execute(select(card_reconciliation).where(
            card_reconciliation.c.card_id == "M1")).mappings().one()
    assert json.loads(row["expected_visits"]) == {"swim": 0}  # what the ledger backs
    assert json.loads(row["card_visits"]) == {"swim": 37}  # what the card shows
    assert row["open_anomalies"] == 1


def test_a_rolled_back_card_image_is_caught(engine, tmp_path):
    site = Site(engine, tmp_path)
    gate = site.gate("gate-01")
    card = site.sell_card("M1", 10)
    dump = card.read()
    for _ in range(4):
        gate.tap(card)
    card.write(dump)  # the old dump written back: four visits "free"
    gate.tap(card)
    site.upload()
    reconcile_due(engine)
    found = {a["kind"] for a in open_anomalies(engine, "M1")}
    assert found == {"rollback"}


def test_a_lost_card_used_offline_after_the_loss_report(engine, tmp_path):
    site = Site(engine, tmp_path)
    gate = site.gate("gate-01", offline=True)
    card = site.sell_card("M1", 10)
    assert gate.tap(card).opened
    change = add_to_denylist(engine, "M1", "reported lost", effective_at_ms=int(site.clock * 1000) + 500)
    assert change is not None and change.delta.added[0].card_id == "M1"
    assert gate.tap(card).opened  # the offline gate has not got the delta yet
    site.upload()
    reconcile_due(engine)
    hits = open_anomalies(engine, "M1")
    assert [(a["kind"], a["severity"]) for a in hits] == [("late_denylist_hit", "medium")]
    assert hits[0]["evidence"]["reason"] == "reported lost"

    # The denylist is a log: taking the card off is a new entry with a new version.
    removed = remove_from_denylist(engine, "M1", "found by the member")
    assert removed.delta.removed == ("M1",)
    assert denylist_snapshot(engine).cards == ()
    assert denylist_delta(engine, change.version).removed == ("M1",)
    report, _ = reconcile_card_in_db(engine, "M1")
    assert [a.kind for a in report.anomalies] == ["late_denylist_hit"]  # still a fact
