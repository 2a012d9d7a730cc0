"""A gate taps a card and the I/O board — the real firmware in MicroPython over a pty —
opens for exactly one passage and reports it; the rule for a passage not taken decides
whether the member keeps the entry, with one record either way."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.card_state import RefusalReason
from protocol.record import Operation, decode_wire
from simulators.ioboard import BoardRig
from terminal_fw.card_memory import CardMemory
from terminal_fw.runtime import Runtime
from terminal_fw.tap import Status
from tests.card_world import CATALOGUE, KEYS, T0
from tests.runtime_world import config_doc, make_settings, member_card
from tests.terminal_fw.ioboard_world import wait_for

pytestmark = pytest.mark.subprocess


class Clock:
    def __init__(self) -> None:
        self.t = T0 / 1000

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def gate(tmp_path, request):
    """A gate terminal (offline, config applied) whose door is the I/O board."""
    not_taken = getattr(request, "param", "spent")
    rig = BoardRig(link_timeout_ms=2500).power_on()
    events: list[dict] = []
    settings = dataclasses.replace(
        make_settings(tmp_path, events=events.append), gate_io="ioboard",
        ioboard={"port": rig.port}, admit_timeout_s=1.0)
    rt = Runtime(settings)
    clock = Clock()
    rt.clock = rt.taps.clock = rt.uid.clock = rt.journal.clock = clock
    doc = config_doc(1, gate={"group": 1, "accepts": ["swim"], "not_taken": not_taken})
    assert rt.config.offer(doc).version == 1
    yield rt, rig, events
    rt.stop(clean=False)
    rig.close()


def visit_records(rt: Runtime) -> list:
    return [decode_wire(p.wire).record for p in rt.outbox.pending()]


def decision(events: list[dict]) -> dict:
    """The latest tap decision (the board's own events may come between)."""
    return [e for e in events if e["event"] in ("gate_open", "refused")][-1]


def passages(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "passage"]


def test_a_tap_opens_the_board_for_exactly_one_passage_and_it_is_reported(gate):
    rt, rig, events = gate
    card = member_card()
    rt.role.on_card(card, "entry")
    assert decision(events)["event"] == "gate_open"
    assert rig.walk_through(wait=5)
    assert not rig.walk_through(wait=0.3), "one passage per tap"
    [done] = wait_for(lambda: passages(events), what="the passage report")
    assert (done["outcome"], done["card"], done["entry_owed"]) == ("completed", "M00001", False)
    [r] = visit_records(rt)
    assert (r.operation, r.visits_before, r.visits_after, done["records"]) == \
        (Operation.TAKE_VISIT, 10, 9, [r.seq])
    assert rt.journal.counts() == {Status.DONE.value: 1}
    assert rt.role.io.passages == 1 == rig.passages


def test_a_refused_card_gets_the_red_light_and_the_door_stays_shut(gate):
    rt, rig, events = gate
    rt.role.on_card(member_card(packages=0), "entry")
    assert decision(events)["event"] == "refused"
    assert wait_for(lambda: rig.output(18) == 1, what="the buzzer")
    assert not rig.walk_through(wait=0.5) and not passages(events)


def test_turned_back_with_the_visit_spent_the_next_tap_is_a_new_entry(gate):
    rt, rig, events = gate
    card = member_card()
    rt.role.on_card(card, "entry")
    [gone] = wait_for(lambda: passages(events), what="the timeout")
    assert (gone["outcome"], gone["entry_owed"]) == ("not_taken", False)
    assert rt.journal.counts() == {Status.DONE.value: 1}
    rt.role.on_card(card, "entry")  # anti-passback (10 min in group 1): the visit was used
    assert decision(events)["event"] == "refused"
    assert RefusalReason.ANTI_PASSBACK.value in decision(events)["reason"]
    assert len(visit_records(rt)) == 1 and rig.passages == 0


@pytest.mark.parametrize("gate", ["keep"], indirect=True)
def test_turned_back_with_the_visit_kept_the_next_tap_passes_free_with_no_new_record(gate):
    rt, rig, events = gate
    card = member_card()
    rt.role.on_card(card, "entry")
    [gone] = wait_for(lambda: passages(events), what="the timeout")
    assert (gone["outcome"], gone["entry_owed"]) == ("not_taken", True)
    [intent] = rt.journal.unresolved()
    assert intent.status is Status.COMMITTED, "the entry is owed to the member"
    rt.role.on_card(card, "entry")
    assert decision(events)["event"] == "gate_open" and decision(events)["free"]
    assert rig.walk_through(wait=5)
    wait_for(lambda: len(passages(events)) == 2, what="the second report")
    assert passages(events)[-1]["outcome"] == "completed"
    # one visit taken, one record, one passage: nothing refunded, nothing written back
    [r] = visit_records(rt)
    assert (r.visits_before, r.visits_after) == (10, 9)
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 9}
    assert rt.journal.counts() == {Status.DONE.value: 1}
    rt.role.on_card(card, "entry")  # and it is owed once only
    assert decision(events)["event"] == "refused" and rig.passages == 1


@pytest.mark.parametrize("gate", ["keep"], indirect=True)
def test_a_passage_reported_late_is_not_owed_again(gate):
    rt, rig, events = gate
    card = member_card()
    rt.role.on_card(card, "entry")
    assert rig.wait_released(5)
    rig.unplug()  # the cable goes while the member walks through
    assert rig.walk_through(wait=1)
    [unknown] = wait_for(lambda: passages(events), what="no report in time")
    assert unknown["outcome"] == "unknown" and not unknown["entry_owed"]
    rig.plug()
    wait_for(lambda: len(passages(events)) == 2, what="the late report")
    late = passages(events)[-1]
    assert (late["outcome"], late["late"], late["entry_owed"]) == ("completed", True, False)
    assert rt.journal.counts() == {Status.DONE.value: 1}
    rt.role.on_card(card, "entry")  # the passage happened: no free entry for it
    assert decision(events)["event"] == "refused" and rig.passages == 1
