"""One simulated site: terminals, cards, a network and HQ ingest, driven by one seed.

:func:`run_seed` builds the world, runs a schedule of steps the seed's random generator
chooses — member taps, checkouts and top-ups, and faults among them — checks the
invariants (:mod:`tests.sim.invariants`) after every step, heals the site (power back,
partitions gone, every card back on a reader, every message delivered) and checks the
end state. The code under test is the real one: :class:`terminal_fw.tap.TapRunner` with
its journal, outbox and recorder, :class:`terminal_fw.uplink.Uplink` (its MQTT client
swapped for the simulated network), the card operations of :mod:`protocol.card_ops`,
:class:`hq_server.ingest.worker.IngestWorker`'s commit-then-acknowledge over a real
SQLite file, the ledger and reconciliation. Only the disk, the power, the card's
presence, the network, the writer thread's turn and the clocks are simulated, and the
seed decides all of them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event

from hq_server.db.engine import open_engine
from hq_server.devices.registry import add_device
from hq_server.ingest.worker import IngestWorker
from hq_server.reconciliation.rules import ReconcileConfig
from hq_server.reconciliation.runs import reconcile_due
from protocol.card_ops import CheckoutLine
from protocol.card_state import CardState
from protocol.mifare import CardRemoved
from protocol.record import Flag, decode_wire
from protocol.terminal_config import TerminalConfig, parse_config
from protocol.topics import Ack
from simulators.mifare_classic import MifareClassic1K
from terminal_fw import failpoints
from terminal_fw.card_memory import CardMemory
from terminal_fw.identity import DeviceIdentity
from terminal_fw.tap import IntentJournal, Status, TapResult, TapRunner
from terminal_fw.uplink import Uplink
from tests.card_world import KEYS, T0
from tests.hq_records import known_store
from tests.sim.parts import HqCrash, Power, PowerCut, SimDisk, SimLink, SimOutbox, SimWriter

STORE = "store-01"
#: The site: (device id, role). The desk issued every card before the schedule starts.
DEVICES = (("desk-01", "handheld"), ("gate-01", "gate"), ("gate-02", "gate"),
           ("kiosk-01", "kiosk"), ("till-01", "handheld"))
CARDS = 3
#: After this long without its card, an unknown write is reported to HQ (seconds).
REPORT_AFTER_S = 300


class InvariantBroken(AssertionError):
    """An invariant does not hold: the message says which, where and at which step."""


def _key(device_id: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(device_id.encode()).digest())


def _config() -> TerminalConfig:
    from tests.runtime_world import config_doc

    return parse_config(config_doc(1, gate={"group": 0, "accepts": [], "exit": "card"},
                                   unconfirmed_report_after_s=REPORT_AFTER_S))


# --- the network ------------------------------------------------------------------------


@dataclass
class Message:
    topic: str
    payload: bytes


class _Published:
    rc = 0  # paho's MQTT_ERR_SUCCESS

    def wait_for_publish(self, timeout: float | None = None) -> None:
        return None


class SimClient:
    """paho's client as the uplink and the ingest worker use it, on the simulated net."""

    def __init__(self, net: SimNetwork, owner: str) -> None:
        self.net = net
        self.owner = owner

    def publish(self, topic: str, payload: bytes, qos: int = 0, **_: Any) -> _Published:
        self.net.publish(self.owner, topic, bytes(payload))
        return _Published()


class SimNetwork:
    """The broker and the links: loses, duplicates, delays, reorders and partitions."""

    def __init__(self, rng: Random, faults: Counter[str]) -> None:
        self.rng = rng
        self.faults = faults
        self.to_hq: list[Message] = []
        self.to_device: dict[str, list[Message]] = defaultdict(list)
        self.partitioned: set[str] = set()
        self.lossy = True
        self.on_ack: Callable[[str, Ack], None] = lambda device, ack: None

    def publish(self, owner: str, topic: str, payload: bytes) -> None:
        if owner == "hq":
            device = topic.split("/")[3]
            self.on_ack(device, Ack.from_json(payload))
            queue = self.to_device[device]
        else:
            if owner in self.partitioned:
                self.faults["message lost (partition)"] += 1
                return
            queue = self.to_hq
        if self.lossy and self.rng.random() < 0.05:
            self.faults["message lost"] += 1
            return
        queue.append(Message(topic, payload))
        if self.lossy and self.rng.random() < 0.05:
            self.faults["message duplicated"] += 1
            queue.append(Message(topic, payload))

    def take(self, queue: list[Message], most: int) -> list[Message]:
        """Up to ``most`` messages of ``queue``, in an order the seed picks (reordering;
        what stays behind is delayed)."""
        out = []
        while queue and len(out) < most:
            out.append(queue.pop(self.rng.randrange(len(queue)) if self.lossy else 0))
        return out

    def restart_broker(self) -> None:
        """The broker restarts: without persistence what it held is gone."""
        self.faults["broker restart"] += 1
        self.to_hq.clear()
        for queue in self.to_device.values():
            queue.clear()


# --- the terminals ----------------------------------------------------------------------


class SimTerminal:
    """One terminal: its disk survives power cuts; everything else is rebuilt at boot."""

    def __init__(self, world: SimWorld, device_id: str, role: str, image: bytes | None) -> None:
        self.world = world
        self.device_id = device_id
        self.role = role
        self.identity = DeviceIdentity(device_id, STORE, _key(device_id))
        self.disk = SimDisk(image)
        self.power = Power()
        self.skew_ms = 0
        self.acked_through = 0  # the highest ack it received (what it may delete)
        self.runner: TapRunner | None = None
        self.uplink: Uplink | None = None
        self.boot()

    def clock(self) -> float:
        return (self.world.now_ms + self.skew_ms) / 1000

    def boot(self) -> None:
        self.power = Power()
        outbox = SimOutbox(self.disk, self.power)
        self.writer = SimWriter(self.world.rng, self.power)
        journal = IntentJournal(outbox, clock=self.clock,
                                new_id=lambda: f"{self.world.rng.getrandbits(64):016x}")
        config = self.world.config
        self.runner = TapRunner(self.identity, outbox, journal, KEYS, config=lambda: config,
                                denylist=lambda: (), offline=lambda: False, clock=self.clock,
                                operator="op1" if self.role == "handheld" else "",
                                writer=self.writer)
        uplink = Uplink(self.device_id, outbox, host="sim", port=0, password="-",
                        resend_after=0.0)
        uplink.client = SimClient(self.world.net, self.device_id)  # type: ignore[assignment]
        uplink.connected.set()
        self.uplink = uplink
        try:
            self.runner.recover()
        except sqlite3.OperationalError as exc:  # a full disk: recovery waits for space
            if "full" not in str(exc):
                raise
        self.world.after_boot(self)

    @property
    def up(self) -> bool:
        return self.power.on and self.runner is not None

    def cut(self) -> None:
        self.power.on = False
        self.runner = None
        self.uplink = None

    @property
    def outbox(self) -> SimOutbox:
        assert self.runner is not None
        return self.runner.outbox  # type: ignore[return-value]

    def link(self, card: MifareClassic1K) -> SimLink:
        return SimLink(card, self.power, self.writer)


# --- the cards --------------------------------------------------------------------------


@dataclass
class SimCard:
    """A member's card; ``copies`` holds clones made of it (each a card of its own)."""

    card_id: str
    chip: MifareClassic1K
    copied: bool = False  # a clone or a rolled-back image was made of it
    history: list[bytes] = field(default_factory=list)  # older images, for rollbacks
    away_until_ms: int = 0  # pulled away mid-write: brought back from then on
    lost: bool = False  # pulled away and not brought back until the site heals


@functools.cache
def _site_template() -> tuple[bytes, tuple[bytes, ...], str]:
    """Once per process: the desk's disk after issuing the cards, the cards' images and
    a migrated HQ database with the site's devices registered (a file to copy)."""
    folder = Path(tempfile.mkdtemp(prefix="onecard-sim-", dir=_scratch_root()))
    hq = folder / "template.db"
    engine = open_engine(f"sqlite:///{hq}")
    known_store(engine, STORE)  # HQ registers terminals of stores it knows only
    for device_id, role in DEVICES:
        public = _key(device_id).public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
        add_device(engine, device_id, public.hex(), STORE, role, now_ms=T0)
    engine.dispose()

    class _Desk:
        now_ms = T0
        config = _config()
        rng = Random(0)
        net = SimNetwork(Random(0), Counter())

        def after_boot(self, terminal: SimTerminal) -> None:
            return None

    desk = SimTerminal(_Desk(), "desk-01", "handheld", None)  # type: ignore[arg-type]
    images = []
    for n in range(CARDS):
        chip = MifareClassic1K.blank(bytes([0x10 + n, 0x22, 0x33, 0x44]))
        for op, args, kwargs in (("issue", (), {"card_id": f"M{n + 1:05d}",
                                                 "card_product": "gold"}),
                                 ("open_account", (20000,), {}),
                                 ("add_visits", ("swim", 2), {})):
            assert desk.runner is not None
            result = desk.runner.run(desk.link(chip), op, *args, **kwargs)
            assert result.ok, result.reason
        images.append(chip.to_mfd())
    assert desk.disk.image is not None
    return desk.disk.image, tuple(images), str(hq)


def _scratch_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# --- HQ ---------------------------------------------------------------------------------


class _HqFile:
    """HQ's database file and engine, one per process and reused by every seed.

    A seed starts from a fresh copy of the template; the engine (and so SQLAlchemy's
    cache of compiled statements, which lives on the engine) stays, so a seed does not
    compile every statement of ingest, the ledger and reconciliation again. Its pool
    is emptied before the file is replaced and at every HQ crash, so no connection
    carries anything from one seed, or one HQ life, to the next.
    """

    def __init__(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="onecard-sim-hq-", dir=_scratch_root()))
        self.path = folder / "hq.db"
        self.reset()
        self.engine = open_engine(f"sqlite:///{self.path}", migrate=False)
        self.hq: SimHq | None = None
        self.commits = 0  # commits begun: the step checks re-read the ledger after one
        event.listen(self.engine, "commit", self._before_commit)

    def reset(self) -> None:
        """A fresh HQ: the template's database, nothing of the previous seed."""
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        for extra in ("-wal", "-shm", "-journal"):
            Path(f"{self.path}{extra}").unlink(missing_ok=True)
        shutil.copyfile(_site_template()[2], self.path)

    def _before_commit(self, conn: Any) -> None:
        self.commits += 1
        if self.hq is not None:
            self.hq.before_commit()


@functools.cache
def _hq_file() -> _HqFile:
    return _HqFile()


class SimHq:
    """HQ ingest on its SQLite file: the real worker's commit, then its acks."""

    def __init__(self, world: SimWorld, file: _HqFile) -> None:
        self.world = world
        self.file = file
        self.crash_armed = False
        file.engine.dispose()  # a new HQ process: no connection of the old one
        self.engine = file.engine
        file.hq = self
        self.worker = IngestWorker(self.engine, host="sim", port=0, username="hq", password="-",
                                   reconcile_every=None, rerequest_every=None, presence=False,
                                   denylist_every=None, clock=world.hq_clock)
        self.worker.client = SimClient(world.net, "hq")  # type: ignore[assignment]

    def before_commit(self) -> None:
        if self.crash_armed:
            self.crash_armed = False
            raise HqCrash("HQ died before the batch's commit")

    def batch(self, messages: list[Message]) -> None:
        prepared = self.worker.ingest.prepare([(m.topic, m.payload) for m in messages])
        self.worker.commit_and_acknowledge(len(messages), prepared)

    def close(self) -> None:
        self.worker.ingest.close()
        self.file.hq = None
        self.engine.dispose()


# --- the world --------------------------------------------------------------------------


@dataclass
class SeedReport:
    seed: int
    steps: int
    faults: Counter[str]
    taps: int
    records_ledgered: int
    digest: str = ""  # of HQ's records: the same seed, the same bytes (intent ids too)


class SimWorld:
    """Everything of one seed. ``bugs`` names planted bugs the invariants must catch
    (used only by the bench's proof that they can fail)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = Random(seed)
        self.now_ms = T0 + 3600_000
        self.step_no = 0
        self.faults: Counter[str] = Counter()
        self.config = _config()
        self.net = SimNetwork(self.rng, self.faults)
        self.net.on_ack = self._check_ack
        desk_image, images, _ = _site_template()
        hq_file = _hq_file()
        hq_file.reset()
        self.hq_file = hq_file
        self.hq = SimHq(self, hq_file)
        self._committed = sqlite3.connect(str(hq_file.path), isolation_level=None)
        self.cards = [SimCard(f"M{n + 1:05d}", MifareClassic1K.from_mfd(img))
                      for n, img in enumerate(images)]
        self.extra_chips: list[tuple[SimCard, MifareClassic1K]] = []  # clones in use
        self.openings: Counter[str] = Counter()  # gate openings per intent
        self.lost_serve_marks: Counter[str] = Counter()  # served marks a power cut lost
        self.reported_unlanded: list[str] = []
        self.taps = 0
        self.terminals: dict[str, SimTerminal] = {}
        for device_id, role in DEVICES:
            self.terminals[device_id] = SimTerminal(
                self, device_id, role, desk_image if device_id == "desk-01" else None)
        self._cut_at: tuple[str, int] | None = None
        self._decoded: list[tuple[Any, str]] | None = None
        self.broken: InvariantBroken | None = None  # the first invariant seen broken
        self._ledger_checked_at = -1  # HQ's commit count when the ledger was last checked

    def hq_clock(self) -> int:
        return self.now_ms

    # --- invariants checked as things happen ---------------------------------------

    def fail(self, what: str) -> None:
        """Raise the broken invariant, and remember it: the product may catch what it
        raises inside its own code (the ack check runs in the worker's publish, inside
        ``except Exception``), and the next step check raises it again."""
        if self.broken is None:
            self.broken = InvariantBroken(f"seed {self.seed}, step {self.step_no}: {what}")
        raise self.broken

    def _check_ack(self, device_id: str, ack: Ack) -> None:
        """Acknowledgements never run ahead of commits: HQ's committed state (read by a
        connection of its own, which sees only committed rows) covers the ack."""
        row = self._committed.execute(
            "SELECT contiguous_through FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        committed = row[0] if row else 0
        if ack.through > committed:
            self.fail(f"HQ acknowledged {device_id} through {ack.through} while its committed "
                      f"records reach only {committed}")

    def after_boot(self, terminal: SimTerminal) -> None:
        """A gate whose served mark a power cut lost may let that entry through once more
        (SERVE_GRACE_S): count it, so the gate invariant allows exactly that."""
        assert terminal.runner is not None
        for intent_id in self.openings:
            intent = terminal.runner.journal.get(intent_id)
            if intent is not None and intent.status is Status.COMMITTED:
                self.lost_serve_marks[intent_id] += 1

    def check_step(self) -> None:
        if self.broken is not None:
            raise self.broken
        for t in self.terminals.values():
            if not t.up:
                continue
            low, last = t.outbox.execute("SELECT MIN(seq), (SELECT last_seq FROM chain)"
                                         " FROM outbox").fetchone()
            deleted_through = (low - 1) if low is not None else last
            if deleted_through > t.acked_through:
                self.fail(f"{t.device_id} deleted records through {deleted_through}; HQ "
                          f"acknowledged only through {t.acked_through}")
        for intent_id, n in self.openings.items():
            if n > 1 + self.lost_serve_marks[intent_id]:
                self.fail(f"the gate opened {n} times for intent {intent_id}")
        if self._ledger_checked_at == self.hq_file.commits:
            return  # HQ committed nothing since the last check: the ledger is as it was
        self._ledger_checked_at = self.hq_file.commits
        unbalanced = self._committed.execute(
            "SELECT asset, SUM(amount) FROM ledger_entries GROUP BY asset "
            "HAVING SUM(amount) != 0").fetchall()
        if unbalanced:
            self.fail(f"the ledger does not balance: {unbalanced}")
        twice = self._committed.execute(
            "SELECT txn_id, COUNT(*) FROM ledger_transactions GROUP BY txn_id "
            "HAVING COUNT(*) > 1").fetchall()
        if twice:
            self.fail(f"records ledgered twice: {twice}")

    # --- the failpoint handler: a power cut at a chosen point of a tap ----------------

    def _failpoint(self, name: str) -> None:
        if self._cut_at is None:
            return
        device_id, left = self._cut_at
        if left > 1:
            self._cut_at = (device_id, left - 1)
            return
        self._cut_at = None
        self.faults[f"power cut at {name}"] += 1
        self.terminals[device_id].power.on = False
        raise PowerCut(name)

    # --- steps ------------------------------------------------------------------------

    def step(self) -> None:
        rng = self.rng
        self.now_ms += rng.choice((200, 1000, 5000, 30_000, 120_000))
        kind = rng.choices(
            ("tap", "publish", "hq", "acks", "report", "power", "boot", "network", "hq_crash",
             "clock", "disk", "clone", "rollback"),
            weights=(40, 14, 12, 10, 3, 4, 6, 3, 2, 2, 2, 1, 1))[0]
        getattr(self, f"_{kind}")()

    def _terminal(self, up: bool = True) -> SimTerminal | None:
        choices = [t for t in self.terminals.values() if t.device_id != "desk-01" and t.up == up]
        return self.rng.choice(choices) if choices else None

    def _tap(self) -> None:
        t = self._terminal()
        if t is None:
            return
        card = self.rng.choice(self.cards)
        chip = card.chip
        if self.extra_chips and self.rng.random() < 0.3:
            card, chip = self.rng.choice(self.extra_chips)
        if card.lost or card.away_until_ms > self.now_ms:
            return
        chip.enter_field()
        rng = self.rng
        if rng.random() < 0.1:
            n, mode = rng.randint(1, 8), rng.choice(("before", "after", "garbage"))
            chip.tear_at_write(n, mode, seed=rng.randrange(1 << 16))
            self.faults[f"card torn ({mode})"] += 1
        if rng.random() < 0.08:
            self._cut_at = (t.device_id, rng.randint(1, 8))
        if rng.random() < 0.2:
            card.history.append(chip.to_mfd())
        self.taps += 1
        try:
            self._operate(t, card, chip)
        except PowerCut:
            t.cut()
        except CardRemoved:
            pass
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            self.faults["tap refused: disk full"] += 1
        finally:
            self._cut_at = None
            chip.cancel_tear()
        if not chip.present:  # pulled away mid-write
            if rng.random() < 0.15:
                card.lost = True
                self.faults["card never brought back"] += 1
            else:
                card.away_until_ms = self.now_ms + rng.choice((1000, 60_000, 900_000))
                self.faults["card pulled away"] += 1
        chip.enter_field()

    def _operate(self, t: SimTerminal, card: SimCard, chip: MifareClassic1K) -> None:
        runner = t.runner
        assert runner is not None
        link = t.link(chip)
        if t.role == "gate":
            result = runner.run(link, "take_visit", serve=True)
            if result.ok:
                self._open_gate(t, result)
        elif t.role == "kiosk":
            runner.run(link, "recharge", self.rng.choice((1000, 5000, 50000)))
        else:
            lines = [CheckoutLine("food", self.rng.choice((500, 1500, 30000)))]
            runner.run(link, "debit", lines)

    def _open_gate(self, t: SimTerminal, result: TapResult) -> None:
        assert t.runner is not None
        intent = result.intent
        if intent is None:
            self.fail(f"{t.device_id} opened the gate with no intent to mark served")
        elif not result.records and not result.free:
            self.fail(f"{t.device_id} opened the gate without a record")
        t.runner.served(result)
        self.openings[intent.id] += 1  # type: ignore[union-attr]

    def _publish(self) -> None:
        t = self._terminal()
        if t is not None and t.uplink is not None:
            t.uplink._publish_due()  # the uplink thread's round, run by the schedule

    def _hq(self) -> None:
        batch = self.net.take(self.net.to_hq, self.rng.choice((1, 5, 50)))
        if batch:
            self._hq_batch(batch)

    def _hq_batch(self, batch: list[Message]) -> None:
        try:
            self.hq.batch(batch)
        except HqCrash:
            self.faults["HQ crash mid-batch"] += 1
            self.hq.close()
            self.hq = SimHq(self, self.hq_file)

    def _acks(self) -> None:
        t = self._terminal()
        if t is None:
            return
        for m in self.net.take(self.net.to_device[t.device_id], 3):
            self._deliver_ack(t, m)

    def _deliver_ack(self, t: SimTerminal, m: Message) -> None:
        ack = Ack.from_json(m.payload)
        assert t.uplink is not None
        try:
            t.uplink.acknowledge(m.payload)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            return
        t.acked_through = max(t.acked_through, ack.through)

    def _report(self) -> None:
        t = self._terminal()
        if t is not None and t.runner is not None:
            try:
                t.runner.report_unconfirmed(REPORT_AFTER_S)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise

    def _power(self) -> None:
        t = self._terminal()
        if t is not None:
            self.faults["power cut between taps"] += 1
            t.cut()

    def _boot(self) -> None:
        t = self._terminal(up=False)
        if t is not None:
            t.boot()

    def _network(self) -> None:
        rng = self.rng
        choice = rng.randrange(3)
        if choice == 0:
            device = rng.choice([d for d, _ in DEVICES])
            self.net.partitioned ^= {device}
            self.faults["partition"] += 1
        elif choice == 1:
            self.net.restart_broker()
        else:
            self.net.partitioned.clear()

    def _hq_crash(self) -> None:
        self.hq.crash_armed = True

    def _clock(self) -> None:
        t = self._terminal()
        if t is not None:
            t.skew_ms = self.rng.choice((-86_400_000, -3_600_000, -30_000, 0, 45_000, 7_200_000))
            self.faults["terminal clock jump"] += 1

    def _disk(self) -> None:
        t = self._terminal()
        if t is not None:
            t.disk.full = not t.disk.full
            if t.disk.full:
                self.faults["terminal disk full"] += 1

    def _clone(self) -> None:
        card = self.rng.choice(self.cards)
        if card.lost or card.away_until_ms > self.now_ms:
            return
        card.copied = True
        self.extra_chips.append((card, MifareClassic1K.from_mfd(card.chip.to_mfd())))
        self.faults["card cloned"] += 1

    def _rollback(self) -> None:
        card = self.rng.choice(self.cards)
        if not card.history or card.lost:
            return
        card.copied = True
        card.chip = MifareClassic1K.from_mfd(self.rng.choice(card.history))
        self.faults["card image rolled back"] += 1

    # --- healing and the end state ---------------------------------------------------

    def heal(self) -> None:
        """Power back, no faults, every card back where its write was left, and every
        record delivered: afterwards nothing may be in flight."""
        self.net.lossy = False
        self.net.partitioned.clear()
        self.hq.crash_armed = False
        for t in self.terminals.values():
            t.disk.full = False
            t.skew_ms = 0
            if not t.up:
                t.boot()
        for card in self.cards:
            card.lost = False
            card.away_until_ms = 0
        self.now_ms += 1000
        # Every unfinished write is settled with its card on the reader (the card's next
        # tap), or reported if the card is a copy that is gone.
        for t in self.terminals.values():
            assert t.runner is not None
            for intent in t.runner.journal.unresolved():
                chips = [c.chip for c in self.cards if c.chip.uid() == intent.uid]
                if chips:
                    chips[0].enter_field()
                    t.runner.run(t.link(chips[0]), "read_balance")
        self.now_ms += 2 * REPORT_AFTER_S * 1000
        for t in self.terminals.values():
            assert t.runner is not None
            t.runner.report_unconfirmed(REPORT_AFTER_S)
        for _ in range(200):
            moved = False
            for t in self.terminals.values():
                assert t.uplink is not None
                t.uplink._publish_due()
            while self.net.to_hq:
                self._hq_batch(self.net.take(self.net.to_hq, 500))
                moved = True
            for t in self.terminals.values():
                while self.net.to_device[t.device_id]:
                    self._deliver_ack(t, self.net.take(self.net.to_device[t.device_id], 1)[0])
                    moved = True
            self.check_step()
            if not moved and all(t.outbox.backlog() == 0 for t in self.terminals.values()):
                break
        else:
            self.fail("the site did not quiesce after healing: records still in flight")

    def check_end(self) -> int:
        """After healing: every record ledgered once, the ledger whole, value conserved
        between each card and the ledger, anomalies exactly where copies were used."""
        from hq_server.ledger.check import check_ledger

        ledger = check_ledger(self.hq.engine)
        if not ledger.balanced:
            self.fail(f"the ledger check fails: {ledger.problems[:5]}")
        posted = dict(self._committed.execute(
            "SELECT device_id, COUNT(*) FROM records WHERE status = 'posted' GROUP BY device_id"))
        for t in self.terminals.values():
            made = t.outbox.last_seq
            held = self._committed.execute(
                "SELECT contiguous_through FROM devices WHERE device_id = ?",
                (t.device_id,)).fetchone()[0]
            if held != made or posted.get(t.device_id, 0) != made:
                self.fail(f"{t.device_id} made {made} records; HQ holds {held} contiguous, "
                          f"{posted.get(t.device_id, 0)} posted")
        # Writes the terminal could not confirm (card pulled, power cut) are posted with
        # the UNCONFIRMED flag; the ones that never landed on the card (settled
        # 'reported, not landed', or whose counter a later write used again) are the one
        # known divergence between card and ledger, and HQ holds the evidence.
        unlanded = self._unlanded()
        summary = reconcile_due(self.hq.engine, ReconcileConfig(), clock=self.hq_clock)
        kinds: dict[str, set[str]] = defaultdict(set)
        for card_id, kind in self._committed.execute("SELECT card_id, kind FROM anomalies"):
            kinds[card_id].add(kind)
        # A copy's reused counter that coincides with an unconfirmed write is classed
        # as the unconfirmed write (low), which still puts the card in front of people.
        copy_kinds = {"clone", "rollback", "unconfirmed_write"}
        for card in self.cards:
            # What the ledger owes the card per asset: its purse and visit accounts less
            # what it spent before the value behind it arrived (the unbacked accounts).
            owed = {asset: -int(total) for asset, total in self._committed.execute(
                "SELECT asset, SUM(amount) FROM ledger_entries WHERE account LIKE ? "
                "GROUP BY asset", (f"card:{card.card_id}:%",))}
            reused = self._counter_reused(card.card_id)
            if card.copied:
                if reused and not kinds[card.card_id] & copy_kinds:
                    self.fail(f"{card.card_id}: a copied card was used (counter reused) and "
                              f"reconciliation raised no clone or rollback: {kinds[card.card_id]}")
                continue
            surprising = kinds[card.card_id] - {"unconfirmed_write"}
            if surprising:
                self.fail(f"{card.card_id}: anomalies {sorted(surprising)} on a card nobody "
                          "copied")
            state = self._card_state(card)
            gap = unlanded[card.card_id]
            if gap and "unconfirmed_write" not in kinds[card.card_id] and \
                    self._counter_reused(card.card_id):
                self.fail(f"{card.card_id}: an unconfirmed write that never landed was "
                          "followed by another write and reconciliation said nothing")
            if state.purse_fen + gap["purse"] != owed.get("CNY", 0):
                self.fail(f"{card.card_id}: the card holds {state.purse_fen} fen, the ledger "
                          f"{owed} (unlanded unconfirmed writes: {gap['purse']})")
            products = set(state.visits) | {a[len("visit:"):] for a in owed if a.startswith("visit:")}
            for product in products:
                on_card = state.visits.get(product, 0) + gap[product]
                if on_card != owed.get(f"visit:{product}", 0):
                    self.fail(f"{card.card_id}: the card holds {state.visits} visits, the "
                              f"ledger {owed} (unlanded unconfirmed writes: {dict(gap)})")
        del summary
        return sum(posted.values())

    def _unlanded(self) -> dict[str, Counter[str]]:
        """Per card, the value of posted unconfirmed writes that never landed."""
        from terminal_fw.tap.journal import state_of

        not_landed: set[tuple[str, str, int]] = set()
        for t in self.terminals.values():
            for (after,) in t.outbox.execute("SELECT after FROM intents WHERE status = ?",
                                             (Status.REPORTED_NOT_LANDED.value,)):
                state = state_of(after)
                if state is not None:
                    not_landed.add((t.device_id, state.card_id, state.counter))
        records = [r for r, status in self._records() if status == "posted"]
        # A card's writes, per counter: (device, time) -> its records.
        writes: dict[tuple[str, int], dict[tuple[str, int], list[Any]]] = defaultdict(
            lambda: defaultdict(list))
        for r in records:
            writes[(r.card_id, r.card_counter)][(r.device_id, r.device_time_ms)].append(r)
        unsure_flags = Flag.UNCONFIRMED_CARD_WRITE | Flag.CONFIRMED_ON_READBACK
        out: dict[str, Counter[str]] = defaultdict(Counter)

        def gone(card_id: str, recs: list[Any]) -> None:
            for r in recs:
                out[card_id]["purse"] += r.purse_after - r.purse_before
                if r.product:
                    out[card_id][r.product] += r.visits_after - r.visits_before

        for (card_id, counter), group in writes.items():
            if len(group) == 1:
                recs = next(iter(group.values()))
                r = recs[0]
                if r.flags & Flag.UNCONFIRMED_CARD_WRITE and \
                        (r.device_id, card_id, counter) in not_landed:
                    gone(card_id, recs)
                continue
            # Several writes of one counter on one card: one landed (the card's line goes
            # on from it: the next counter's write starts from its state, or the card
            # shows it), the others its terminals could not be sure of never did.
            goes_on = self._line_after(card_id, counter, writes)
            ordered = sorted(group.values(), key=lambda recs: bool(recs[0].flags & unsure_flags))
            landed = next((recs for recs in ordered if goes_on(recs)), ordered[0])
            for recs in group.values():
                if recs is not landed and recs[0].flags & unsure_flags:
                    gone(card_id, recs)
        return out

    def _line_after(self, card_id: str, counter: int,
                    writes: dict[tuple[str, int], dict[tuple[str, int], list[Any]]]
                    ) -> Callable[[list[Any]], bool]:
        """Whether a write of ``counter`` left the state the card's line goes on from."""
        following = writes.get((card_id, counter + 1))
        if following:
            starts = [(recs[0].purse_before, {r.product: r.visits_before for r in recs
                                              if r.product}) for recs in following.values()]
        else:
            card = next(c for c in self.cards if c.card_id == card_id)
            state = self._card_state(card)
            starts = [(state.purse_fen, dict(state.visits))]

        def goes_on(recs: list[Any]) -> bool:
            purse = recs[-1].purse_after
            visits = {r.product: r.visits_after for r in recs if r.product}
            return any(p == purse and all(v.get(k, visits[k]) == visits[k] for k in visits)
                       for p, v in starts)
        return goes_on

    def _records(self) -> list[tuple[Any, str]]:
        """HQ's records, decoded once after healing (the end checks read them often)."""
        if self._decoded is None:
            self._decoded = [(decode_wire(bytes(w)).record, status) for w, status in
                             self._committed.execute("SELECT wire, status FROM records")]
        return self._decoded

    def _counter_reused(self, card_id: str) -> bool:
        """Whether two different writes of the card carry the same counter (a copy used)."""
        writes: dict[int, set[tuple[str, int]]] = defaultdict(set)
        for r, _ in self._records():
            if r.card_id == card_id:
                writes[r.card_counter].add((r.device_id, r.device_time_ms))
        return any(len(w) > 1 for w in writes.values())

    def _card_state(self, card: SimCard) -> CardState:
        card.chip.enter_field()
        read = CardMemory(card.chip, KEYS, self.config.catalogue).read()
        return read.state

    def close(self) -> None:
        self._committed.close()
        self.hq.close()
        for t in self.terminals.values():
            if t.runner is not None:
                t.runner.outbox.close()


def run_seed(seed: int, *, steps: tuple[int, int] = (15, 45)) -> SeedReport:
    """Run one seed's schedule with every invariant checked; raises InvariantBroken
    (or whatever the code under test raised) with the seed in the message."""
    previous = failpoints.set_handler(None)
    world: SimWorld | None = None
    try:
        world = SimWorld(seed)
        failpoints.set_handler(world._failpoint)
        n = Random(seed ^ 0x5EED).randint(*steps)
        for world.step_no in range(1, n + 1):
            world.step()
            world.check_step()
        failpoints.set_handler(None)
        world.step_no = n + 1
        world.heal()
        ledgered = world.check_end()
        digest = hashlib.sha256(b"".join(bytes(w) for (w,) in world._committed.execute(
            "SELECT wire FROM records ORDER BY device_id, seq"))).hexdigest()
        return SeedReport(seed, n, world.faults, world.taps, ledgered, digest)
    finally:
        failpoints.set_handler(previous)
        if world is not None:
            world.close()


def replay_command(seed: int) -> str:
    return f"python -m tests.sim --seed {seed}"
