"""Card sessions: a UI holds a card while the member decides, runs several operations on
it, and is told when it goes away — on the simulated chip, on a PN532 over a pty, and
through the terminal's own PC/SC reader loop (pcscd + vpcd)."""

from __future__ import annotations

import queue
import threading

import pytest

from protocol.card_ops import read_balance, recharge
from simulators.mifare_classic import MifareClassic1K
from simulators.pn532_emulator import Pn532Emulator
from terminal_fw.card_memory import CardMemory
from terminal_fw.sessions import CardSession, CardSessions
from tests import pcsc_fixtures
from tests.card_tx import make_runner, personalise
from tests.card_world import CATALOGUE, KEYS
from tests.reader_paths import Pn532Path
from tests.runtime_world import config_doc, make_runtime

pcscd = pcsc_fixtures.pcscd
vpcd_pair = pcsc_fixtures.vpcd_pair
UID = bytes.fromhex("5E551011")


def member_card() -> MifareClassic1K:
    return personalise(MifareClassic1K.blank(UID), opening_fen=10_000)  # type: ignore[return-value]


def purse(card: MifareClassic1K) -> int:
    card.enter_field()
    return CardMemory(card, KEYS, CATALOGUE).read().state.purse_fen


def gone_flag(session: CardSession) -> threading.Event:
    told = threading.Event()
    session.when_gone(lambda s: told.set())
    return told


def test_a_session_runs_several_operations_and_hears_the_card_leave(tmp_path) -> None:
    runner = make_runner(tmp_path)
    card = member_card()
    session = CardSessions().hold(card, runner.run)
    told = gone_flag(session)
    assert session.run(read_balance).state.purse_fen == 10_000  # type: ignore[union-attr]
    assert session.run(recharge, 500).ok and session.run(recharge, 700).ok
    assert session.active and not told.is_set()
    card.halt()  # the member takes the card away while deciding on more
    later = session.run(recharge, 900)
    assert not later.ok and later.retry and session.gone and told.is_set()
    assert not session.run(read_balance).ok, "a gone card runs nothing more"
    assert purse(card) == 11_200 and runner.outbox.backlog() == 2


def test_a_card_pulled_during_a_write_ends_the_session_and_settles_at_the_next(tmp_path) -> None:
    emulator = Pn532Emulator(pcsc_fixtures_field()).start()
    path = Pn532Path(emulator)
    try:
        runner = make_runner(tmp_path)
        card = member_card()
        session = CardSessions().hold(path.tap(card), runner.run)
        told = gone_flag(session)
        assert session.run(recharge, 500).ok
        card.tear_at_write(3, "after")  # the commit's last block lands, its answer is lost
        torn = session.run(recharge, 1000)
        assert not torn.ok and torn.retry and told.is_set() and session.gone
        path.take_away()
        again = CardSessions().hold(path.tap(card), runner.run)  # the member puts it back
        shown = again.run(read_balance)
        assert shown.ok and shown.free, "the torn recharge landed: recorded now, not again"
        assert again.run(read_balance).state.purse_fen == 11_500  # type: ignore[union-attr]
        assert runner.outbox.backlog() == 2 and not runner.journal.unresolved()
        again.close()
        assert not again.active and not again.gone
    finally:
        path.close()
        emulator.stop()


def pcsc_fixtures_field():
    from simulators.card_field import CardField

    return CardField("pn532")


@pytest.fixture
def kiosk(tmp_path, vpcd_pair):
    entry, _ = vpcd_pair
    events: list[dict] = []
    rt = make_runtime(tmp_path, role="kiosk", device_id="kiosk-01", pcsc_entry=entry.name,
                      events=events.append)
    assert rt.config.offer(config_doc(1, gate={})).version == 1
    sessions: queue.Queue[CardSession] = queue.Queue()
    rt.role.attach(sessions.put)
    rt.start()
    yield rt, entry.field, sessions, events
    rt.stop(clean=False)


def test_the_kiosk_holds_the_card_on_its_pcsc_reader_until_it_leaves(kiosk) -> None:
    rt, field, sessions, events = kiosk
    card = member_card()
    field.place(card)
    session = sessions.get(timeout=10)
    told = gone_flag(session)
    assert [e["card"]["purse_fen"] for e in events if e["event"] == "card"] == [10_000]
    # the reader loop has returned from on_card and left the link open for the UI
    assert rt.role.recharge(session.link, 500).ok
    assert session.run(recharge, 300).ok
    assert session.run(read_balance).state.purse_fen == 10_800  # type: ignore[union-attr]
    assert rt.sessions.held(session.reader) is session
    field.remove()
    assert session.wait_gone(10) and told.is_set()
    assert rt.sessions.held(session.reader) is None
    assert session.run(read_balance).retry
    assert rt.outbox.backlog() == 2
    field.place(card)  # back on the reader: a new session, the card as it now stands
    second = sessions.get(timeout=10)
    assert second is not session and second.run(read_balance).state.purse_fen == 10_800  # type: ignore[union-attr]
    second.close()
