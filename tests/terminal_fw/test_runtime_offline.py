"""The runtime with no HQ at all: UID risk caps, unconfirmed card writes reported with both
states, a full disk, and the counter and kiosk roles on a card."""

from __future__ import annotations

import sqlite3

import pytest

from protocol.card_state import RefusalReason
from protocol.record import Flag, Operation
from terminal_fw.card_memory import CardMemory
from terminal_fw.local_store import LocalStore
from terminal_fw.tap import Status
from tests.card_world import CATALOGUE, KEYS, T0
from tests.runtime_world import config_doc, make_runtime, member_card


class Clock:
    def __init__(self, t_ms: int = T0) -> None:
        self.t = t_ms / 1000

    def __call__(self) -> float:
        return self.t


_started = []


@pytest.fixture(autouse=True)
def _stop_runtimes():
    yield
    while _started:
        _started.pop().stop(clean=False)


def offline_runtime(tmp_path, role="gate", **kw):
    """A runtime that never reaches a broker (port 1), with config version 1 applied."""
    events: list[dict] = []
    rt = make_runtime(tmp_path, role=role, events=events.append, **kw)
    _started.append(rt)
    clock = Clock()
    rt.clock = rt.taps.clock = rt.uid.clock = rt.journal.clock = clock
    rt.uid._last_contact_ms = T0  # HQ was last heard from at the start of the test
    gate = {"group": 1, "accepts": ["swim"]} if role == "gate" else {}
    assert rt.config.offer(config_doc(1, gate=gate)).version == 1
    return rt, events, clock


def records(rt):
    return [s.record for s in rt.outbox.records()]


def test_uid_credentials_offline_are_capped_per_credential_per_terminal_and_by_age(tmp_path):
    rt, events, clock = offline_runtime(tmp_path)
    # caps: 2 uses and 10000 fen per credential, 15000 fen per terminal, 3600 s offline
    a, b, c = "0000000001", "0000000002", "0000000003"
    assert rt.uid_use("em4100", a, 3000)[0] and rt.uid_use("em4100", a, 3000)[0]
    ok, reason, _ = rt.uid_use("em4100", a, 3000)
    assert not ok and "2 uses" in reason
    ok, reason, _ = rt.uid_use("qr", b, 10001)
    assert not ok and "10000 fen for this credential" in reason
    assert rt.uid_use("qr", b, 5000)[0] and rt.uid_use("qr", b, 4000)[0]  # 15000 in all
    ok, reason, _ = rt.uid_use("em4100", c, 1)
    assert not ok and "terminal's offline limit of 15000" in reason
    taken = records(rt)
    assert len(taken) == 4 and all(r.operation is Operation.UID_VISIT for r in taken)
    assert all(r.flags == Flag.OFFLINE | Flag.UNDER_RISK_CAP for r in taken)
    assert [r.extra["amount_fen"] for r in taken] == [3000, 3000, 5000, 4000]
    assert rt.uid.exposure() == (4, 15000)

    # HQ acknowledges the first three: their exposure is released
    rt.outbox.acknowledge(3)
    assert rt.uid.exposure() == (1, 4000)
    assert rt.uid_use("em4100", c, 3000)[0]

    # a credential on the denylist is refused offline too
    from protocol.topics import DenylistEntry, DenylistSnapshot

    rt.denylist.apply_snapshot(DenylistSnapshot(1, (DenylistEntry("em4100.0000000009", "", 0),)))
    ok, reason, _ = rt.uid_use("em4100", "0000000009", 100)
    assert not ok and "denylist" in reason

    # after max_offline_age_s without HQ nothing is taken offline any more
    clock.t += 3601
    ok, reason, _ = rt.uid_use("em4100", "0000000004", 100)
    assert not ok and "offline for 3601 s" in reason


def test_the_gate_takes_uid_credentials_from_a_serial_reader_under_the_caps(tmp_path):
    rt, events, clock = offline_runtime(tmp_path)
    rt.role.on_uid("qr", "MEMBER-QR-42")
    assert events[-1]["event"] == "gate_open" and events[-1]["flags"] == 3
    rt.role.on_uid("qr", "MEMBER-QR-42")
    rt.role.on_uid("qr", "MEMBER-QR-42")
    assert events[-1]["event"] == "refused"
    assert sum(e["event"] == "gate_open" for e in events) == 2 == len(records(rt))


def test_an_unconfirmed_card_write_is_reported_with_both_states_then_settled(tmp_path):
    rt, events, clock = offline_runtime(tmp_path)
    card = member_card()
    card.tear_at_write(3, "after")  # the copy landed but the reader never heard so
    rt.role.on_card(card, "entry")
    assert events[-1]["event"] == "refused" and events[-1]["retry"]
    assert rt.outbox.backlog() == 0
    [intent] = rt.journal.unresolved()
    assert intent.status is Status.OPEN

    assert rt.taps.report_unconfirmed(older_than_s=900) == 0  # not yet
    clock.t += 901  # (also past the gate group's 10 minutes of anti-passback)
    assert rt.taps.report_unconfirmed(older_than_s=900) == 1
    [r] = records(rt)
    assert r.flags & Flag.UNCONFIRMED_CARD_WRITE and r.operation is Operation.TAKE_VISIT
    states = r.extra["unconfirmed"]
    assert states["card_before"]["visits"] == {"swim": 10}
    assert states["card_after"]["visits"] == {"swim": 9}

    # the card comes back: the write had landed; nothing is recorded twice
    card.enter_field()
    rt.role.on_card(card, "entry")
    assert events[-1]["event"] == "gate_open"
    assert [x.visits_after for x in records(rt)] == [9, 8]
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 8}
    assert not rt.journal.unresolved()


def test_a_full_disk_raises_the_alarm_refuses_value_and_corrupts_nothing(tmp_path):
    rt, events, clock = offline_runtime(tmp_path)
    card = member_card()
    rt.role.on_card(card, "entry")
    assert events[-1]["event"] == "gate_open"
    # the disk fills up: a page quota on both of the terminal's files stands in for it
    for db, table in ((rt.store.conn, "meta"), (rt.outbox.db.conn, "intents")):
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")
        for size in (2000, 200, 20, 1):  # every page full, down to the last gaps
            with pytest.raises(sqlite3.OperationalError):
                for i in range(1000):
                    db.execute(
                        "INSERT INTO meta VALUES (?, ?)" if table == "meta" else
                        "INSERT INTO intents VALUES (?, 'ff', '', 0, 0, 'null', 'null', '[]',"
                        " 'done', 0, 0)", (f"filler{size}-{i}", "x" * size)[:2 if table == "meta"
                                                                           else 1])
    clock.t += 3600  # past anti-passback
    rt.role.on_card(card, "entry")
    assert events[-1]["event"] == "refused" and "storage full" in events[-1]["reason"]
    assert any(e["event"] == "storage_alarm" for e in events)
    assert rt.health()["readers"]["storage"] == "full"
    ok, reason, _ = rt.uid_use("qr", "X", 100)
    assert not ok and "storage full" in reason
    # nothing half-written: the card, the outbox and the store agree and check out
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 9}
    assert [r.visits_after for r in records(rt)] == [9]
    for db in (rt.store, rt.outbox):
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not rt.journal.unresolved()
    # space comes back: the alarm clears and taps are served again
    rt.store.execute("DELETE FROM meta WHERE key LIKE 'filler%'")
    rt.outbox.execute("DELETE FROM intents WHERE id LIKE 'filler%'")
    for db in (rt.store, rt.outbox):
        db.execute("PRAGMA max_page_count=1000000")
    rt.probe_storage()
    assert rt.storage_alarm == ""
    rt.role.on_card(card, "entry")
    assert events[-1]["event"] == "gate_open"


def test_the_counter_checks_out_deducts_recharges_and_issues(tmp_path):
    rt, events, clock = offline_runtime(tmp_path, role="handheld", device_id="hh-01")
    card = member_card(opening_fen=10000)
    counter = rt.role
    # 2 teas (food, 88%) + 1 massage (spa, 80%): 2640 + 16000 = 18640; purse 10000
    result = counter.checkout(card, [("tea", 2), ("massage", 1)], operator="alice")
    assert result.ok and result.state.purse_fen == 0
    [debit] = [s.record for s in result.records]
    assert (debit.operation, debit.cash_fen, debit.operator) == (Operation.DEBIT, 8640, "alice")
    assert not counter.checkout(card, [("caviar", 1)]).ok
    assert counter.recharge(card, 50000).state.purse_fen == 52500  # bonus tier 2500
    assert counter.take_visit(card, "swim").state.visits == {"swim": 9}
    refused = counter.take_visit(card, "gym")
    assert not refused.ok and refused.refusal.reason is RefusalReason.EXHAUSTED
    blank = member_card.__globals__["MifareClassic1K"].blank(bytes.fromhex("0A0B0C0D"))
    issued = counter.issue_card(blank, "M00077", "gold", opening_fen=0)
    assert issued.ok and [s.record.operation for s in issued.records] == \
        [Operation.ISSUE, Operation.OPEN_ACCOUNT]
    assert CardMemory(blank, KEYS, CATALOGUE).read().state.card_id == "M00077"
    assert not rt.journal.unresolved()


def test_the_kiosk_engine_shows_and_sells(tmp_path):
    rt, events, clock = offline_runtime(tmp_path, role="kiosk", device_id="kiosk-01")
    card = member_card(opening_fen=100000, packages=0)
    kiosk = rt.role
    assert kiosk.read_balance(card).state.purse_fen == 110000
    assert kiosk.add_visits(card, "gym").state.visits == {"gym": 12}
    assert kiosk.sell_pass(card, "month").state.pass_product == "month"
    assert kiosk.recharge(card, 1000, payment_ref="qr-123").ok
    ops = [r.operation for r in records(rt)]
    assert ops == [Operation.ADD_VISITS, Operation.SELL_PASS, Operation.RECHARGE]


def test_no_config_means_no_value_taken(tmp_path):
    rt = make_runtime(tmp_path)
    _started.append(rt)
    assert not rt.card(member_card(), "issue").ok
    ok, reason, _ = rt.uid_use("qr", "X", 0)
    assert not ok and "no configuration" in reason
    store = LocalStore(tmp_path / "data" / "runtime.db")
    assert store.get("denylist_version") is None
    store.close()


def test_the_gate_reads_id_cards_and_qr_codes_from_serial_readers(tmp_path):
    from simulators.uid_readers import Em4100ReaderEmulator, QrScannerEmulator
    from tests.fleet import wait_for

    with Em4100ReaderEmulator("rdm6300") as id_reader, QrScannerEmulator() as scanner:
        rt, events, clock = offline_runtime(
            tmp_path, uid_readers=[{"port": id_reader.path, "kind": "em4100"},
                                   {"port": scanner.path, "kind": "qr"}])
        rt.start()
        wait_for(lambda: rt.readers.get(f"qr:{scanner.path}") == "ok"
                 and rt.readers.get(f"em4100:{id_reader.path}") == "ok", 10, "readers open")
        id_reader.present_tag(0x1A2B3C4D5E)
        wait_for(lambda: any(e["event"] == "gate_open" for e in events), 10, "ID card entry")
        scanner.scan("TICKET-0001")
        wait_for(lambda: sum(e["event"] == "gate_open" for e in events) == 2, 10, "QR entry")
        assert sorted(r.card_id for r in records(rt)) == ["em4100.1A2B3C4D5E", "qr.TICKET-0001"]


def test_the_shipped_settings_file_and_the_documented_config_parse():
    """deploy/terminal.toml.example and the config example in docs/deploy-terminal.md."""
    import json
    import re
    from pathlib import Path

    from protocol.terminal_config import parse_config
    from terminal_fw.gate_io import GateWiring
    from terminal_fw.runtime import RuntimeSettings

    root = Path(__file__).parent.parent.parent
    settings = RuntimeSettings.from_toml(root / "deploy" / "terminal.toml.example")
    assert settings.pcsc_entry.startswith("ACS ACR122U")
    assert [u["kind"] for u in settings.uid_readers] == ["em4100", "qr"]
    assert GateWiring(**settings.gpio).relay == 17
    doc = (root / "docs" / "deploy-terminal.md").read_text()
    example = re.search(r"```json\n(.*?)```", doc, re.S).group(1)
    config = parse_config(json.loads(example))
    assert config.version == 3 and config.gate.group == 1
    monday_10am = (20773 * 86400 + 2 * 3600) * 1000  # 2026-11-16 10:00 in Beijing
    assert config.is_open(monday_10am)
    assert not config.is_open(monday_10am - 5 * 3600_000)  # 05:00, before opening
    # every weekday is open in the example (it closed the gate on most weekdays before)
    assert config.is_open(monday_10am + 2 * 86_400_000)  # Wednesday 10:00
    assert not config.is_open(monday_10am + 2 * 86_400_000 - 5 * 3600_000)  # Wed 05:00


def test_anti_passback_holds_across_the_gates_of_a_group_and_exits_record_nothing(tmp_path):
    gates = []
    for name, group in (("gate-01", 1), ("gate-02", 1), ("gate-03", 2)):
        rt, events, clock = offline_runtime(tmp_path / name, device_id=name)
        rt.config.offer(config_doc(2, gate={"group": group, "accepts": ["swim"]},
                                   catalogue={**CATALOGUE.to_dict(),
                                              "anti_passback_minutes": {"1": 10, "2": 10}}))
        gates.append((rt, events, clock))
    card = member_card()
    (g1, e1, c1), (g2, e2, c2), (g3, e3, c3) = gates
    g1.role.on_card(card, "entry")
    assert e1[-1]["event"] == "gate_open"
    g2.role.on_card(card, "entry")  # the next turnstile of the same entrance
    assert e2[-1]["event"] == "refused" and RefusalReason.ANTI_PASSBACK.value in e2[-1]["reason"]
    g3.role.on_card(card, "entry")  # another entrance (the spa)
    assert e3[-1]["event"] == "gate_open"
    g2.role.on_card(card, "exit")
    assert e2[-1] == {"event": "gate_open", "direction": "exit", "card": "M00001", "free": True}
    assert [len(records(g)) for g, _, _ in gates] == [1, 0, 1]
    c2.t += 11 * 60  # ten minutes later the same entrance lets the card in again
    g2.role.on_card(card, "entry")
    assert e2[-1]["event"] == "gate_open"
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 7}
