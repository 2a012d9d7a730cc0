"""Power cuts at every step of a tap, through the real PC/SC path.

The terminal runs as its own process (``onecard terminal run``) on a virtual reader
behind the real pcscd; a failpoint kills it with SIGKILL at one step of the first tap.
It is restarted, the member taps again, and then: the visits gone from the card equal
the visits recorded, and the gate opened exactly once per visit taken — nothing lost,
nothing doubled, whatever step the power cut hit.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker_config.runner import free_port
from protocol.record import Flag, Operation
from terminal_fw.card_memory import CardMemory
from terminal_fw.config_sync import ConfigSync
from terminal_fw.local_store import LocalStore
from terminal_fw.outbox import Outbox
from terminal_fw.tap import IntentJournal, Status
from tests import pcsc_fixtures
from tests.card_world import CATALOGUE, KEYS
from tests.runtime_world import config_doc, member_card, prepare_terminal

pytestmark = pytest.mark.pcsc
pcscd = pcsc_fixtures.pcscd
vpcd_pair = pcsc_fixtures.vpcd_pair
TIMEOUT = 30.0


class TerminalProcess:
    """``onecard terminal run`` in a subprocess, its decisions read from stdout."""

    def __init__(self, root: Path, reader: str, failpoint: str | None = None) -> None:
        env = dict(os.environ, ONECARD_BROKER_PASSWORD="unused")
        env.pop("ONECARD_FAILPOINT", None)
        if failpoint:
            env["ONECARD_FAILPOINT"] = failpoint
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onecard.cli", "terminal", "run",
             "--secrets", str(root / "secrets"), "--data", str(root / "data"),
             "--role", "gate", "--broker-port", str(free_port()), "--pcsc-entry", reader,
             "--mock-gpio", "--admit-timeout", "0.05", "--events"],
            stdout=subprocess.PIPE, stderr=(root / "terminal.err").open("ab"), env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def next_event(self, kinds: tuple[str, ...], timeout: float = TIMEOUT) -> dict | None:
        """The next event of one of ``kinds``; None if the process died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    return None
                continue
            self.seen.append(event)
            if event["event"] in kinds:
                return event
        raise AssertionError(f"no {kinds} event within {timeout}s; saw {self.seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STEPS = [
    "tap:intent",  # intent durable, card not yet written
    "card:write_block:1",  # the card's new copy half written
    "card:write_block:3",  # the new copy complete, the mirror not yet
    "tap:card_written",  # card written, records not committed
    "tap:committed",  # records committed, intent not yet updated
    "tap:before_open",  # everything durable, the turnstile not yet released
]


@pytest.mark.parametrize("step", STEPS)
def test_a_power_cut_at_any_step_of_a_tap_loses_and_doubles_nothing(vpcd_pair, tmp_path, step):
    entry, _exit = vpcd_pair
    prepare_terminal(tmp_path)
    (tmp_path / "data").mkdir()
    store = LocalStore(tmp_path / "data" / "runtime.db")
    ConfigSync(store).offer(config_doc(1, gate={"group": 0, "accepts": ["swim"]}))
    store.close()
    card = member_card(now_ms=int(time.time() * 1000))
    opens = 0

    first = TerminalProcess(tmp_path, entry.name, failpoint=step)
    try:
        assert first.next_event(("ready",)) is not None
        entry.field.place(card)
        event = first.next_event(("gate_open", "refused"))
        assert event is None, f"the failpoint {step} was not reached: {event}"
        assert first.proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        first.stop()
    entry.field.remove()

    second = TerminalProcess(tmp_path, entry.name)
    try:
        assert second.next_event(("ready",)) is not None
        time.sleep(entry.REMOVAL_HOLD_S)
        entry.field.place(card)
        event = second.next_event(("gate_open", "refused"))
        assert event is not None and event["event"] == "gate_open", second.seen
        opens += 1
        entry.field.remove()
    finally:
        second.stop()

    card.enter_field()
    visits_left = CardMemory(card, KEYS, CATALOGUE).read().state.visits["swim"]
    box = Outbox(tmp_path / "data" / "terminal.db")
    visits = [r.record for r in box.records() if r.record.operation is Operation.TAKE_VISIT]
    box.close()
    assert 10 - visits_left == len(visits) == opens == 1, (step, visits_left, visits)
    assert not visits[0].flags & Flag.UNCONFIRMED_CARD_WRITE
    assert (visits[0].visits_before, visits[0].visits_after) == (10, 9)
    box = Outbox(tmp_path / "data" / "terminal.db")
    journal = IntentJournal(box)
    assert not [i for i in journal.unresolved() if i.status is not Status.DONE], journal.counts()
    box.close()


def test_the_counter_and_the_kiosk_work_on_a_card_through_pcsc(vpcd_pair, tmp_path):
    """The handheld's and the kiosk's engines over a real PC/SC link (pcscd, virtual reader)."""
    from terminal_fw.readers.pcsc import PcscReaders
    from tests.runtime_world import make_runtime

    entry, _exit = vpcd_pair
    counter = make_runtime(tmp_path / "hh", role="handheld", device_id="hh-01")
    kiosk = make_runtime(tmp_path / "kiosk", role="kiosk", device_id="kiosk-01")
    readers = PcscReaders([entry.name])
    try:
        for rt in (counter, kiosk):
            rt.config.offer(config_doc(1, gate={}))
        card = member_card(opening_fen=10000, now_ms=int(time.time() * 1000))
        entry.field.place(card)
        assert readers.wait_for_card(TIMEOUT, reader=entry.name) is not None
        with readers.connect(entry.name) as link:
            assert kiosk.role.read_balance(link).state.purse_fen == 10000
            paid = counter.role.checkout(link, [("tea", 2)], operator="alice")
            assert paid.ok and paid.state.purse_fen == 10000 - 2640
            assert counter.role.take_visit(link, "swim").state.visits == {"swim": 9}
            assert kiosk.role.recharge(link, 50000, payment_ref="qr-9").state.purse_fen == \
                10000 - 2640 + 52500
        entry.field.remove()
        card.enter_field()
        state = CardMemory(card, KEYS, CATALOGUE).read().state
        assert (state.purse_fen, state.visits) == (59860, {"swim": 9})
        assert [r.record.operation for r in counter.outbox.records()] == \
            [Operation.DEBIT, Operation.TAKE_VISIT]
        assert [r.record.operation for r in kiosk.outbox.records()] == [Operation.RECHARGE]
    finally:
        readers.close()
        counter.stop(clean=False)
        kiosk.stop(clean=False)
