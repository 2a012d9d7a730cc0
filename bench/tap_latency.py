"""Tap latency through the real reader stacks: pcscd + vpcd, and a PN532 on a pty.

Each tap is the deployed gate's path (:class:`terminal_fw.tap.TapRunner`, as
the runtime's gate role runs it): a member card (OneCard format, a year pass) is put on
the simulated reader; the clock starts when the terminal's driver reports the card
(pcscd's status change / the PN532's InListPassiveTarget answer) and stops when the gate
may open: the card read, the visit decided, the intent on disk, the card's new state
committed, the record signed and committed durably to the outbox (SQLite WAL,
synchronous=FULL; two waits for the disk per tap, the first overlapped with card I/O).
The card's second state copy is written after that, while the member walks through;
``done_p99_ms`` reports the clock up to the end of that write too. The card is then taken
away and, as at a real gate, the next member comes after an idle gap of 0.1-0.5 s:
back-to-back loops run 3-5x faster than real taps and mislead.

Baselines, in the same run: the bare round trip of one card command (a 16-byte block
read) right after each tap, and one durable SQLite commit (WAL, FULL) after an idle gap.

Paths: ``pcsc`` (pyscard -> pcscd -> vpcd -> a reader with multi-block reads, as ACS's
ACR1252U), ``pcsc-acr122u`` (the same with one block per APDU, as the ACR122U) and
``pn532`` (pyserial -> pty -> the PN532 emulator).

    python -m bench.tap_latency --taps 100 [--path pcsc|pcsc-acr122u|pn532|all] [--seed 1]

Prints a table, then one JSON line per path with path, reader, taps, p50_ms, p95_ms,
p99_ms, done_p99_ms, apdu_roundtrip_ms, commit_p50_ms, card_commands_per_tap.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from protocol.card_ops import take_visit  # noqa: E402
from protocol.mifare import KeyType  # noqa: E402
from protocol.record import Operation, TransactionRecord  # noqa: E402
from simulators.card_field import CardField  # noqa: E402
from simulators.mifare_classic import MifareClassic1K  # noqa: E402
from simulators.pn532_emulator import Pn532Emulator  # noqa: E402
from simulators.vpcd_reader import VpcdReader  # noqa: E402
from terminal_fw.identity import load_or_create  # noqa: E402
from terminal_fw.outbox import Outbox  # noqa: E402
from tests.card_tx import make_runner, personalise  # noqa: E402
from tests.card_world import KEYS, T0  # noqa: E402
from tests.pcsc_fixtures import running_pcscd, vpcd_lock  # noqa: E402
from tests.reader_paths import PcscPath, Pn532Path  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def member_card() -> MifareClassic1K:
    card = MifareClassic1K.blank(bytes.fromhex("B3A1C0DE"))
    personalise(card, "M09999", opening_fen=100_000, pass_name="year")
    card.enter_field()
    return card


class RemoteField:
    """The card field of a simulated reader that runs in its own process.

    A real reader is its own piece of hardware: it never competes with the terminal's
    process for the interpreter lock. Running the simulated reader in a child process
    keeps that so, and the field (put a card down, take it away) is driven over a pipe.
    """

    def __init__(self, conn) -> None:
        self._conn = conn

    def _call(self, *msg):
        self._conn.send(msg)
        return self._conn.recv()

    def load(self, card: MifareClassic1K) -> None:
        """Hand the reader's process the card (it keeps it, with what taps write on it)."""
        self._call("load", card.to_mfd())

    def place(self, card: object = None) -> None:
        self._call("place")

    def remove(self) -> None:
        self._call("remove")

    @property
    def served(self) -> int:
        return self._call("served")


def _reader_process(conn, kind: str, multi_block: bool) -> None:
    field = CardField("bench")
    if kind == "pcsc":
        reader = VpcdReader(field, port=35963, multi_block=multi_block)
        reader.removal_hold = 0  # each tap waits for pcscd's removal event itself
        reader.start()
        conn.send(reader.name)
    else:
        reader = Pn532Emulator(field).start()
        conn.send(reader.link_path)
    card = None
    while True:
        msg = conn.recv()
        if msg[0] == "load":
            card = MifareClassic1K.from_mfd(msg[1])
            conn.send(None)
        elif msg[0] == "place":
            card.enter_field()
            field.place(card)
            conn.send(None)
        elif msg[0] == "remove":
            field.remove()
            conn.send(None)
        elif msg[0] == "served":
            conn.send(reader.apdus_served if kind == "pcsc" else reader.commands_served)
        else:
            reader.stop()
            conn.send(None)
            return


def commit_baseline(db: Path, rng: random.Random, n: int = 30) -> float:
    """p50 of one durable SQLite commit (WAL, FULL) after an idle gap, on this disk."""
    box = Outbox(db)
    times = []
    for _ in range(n):
        time.sleep(rng.uniform(0.05, 0.2))
        t = time.perf_counter()
        with box.transaction() as conn:
            conn.execute("UPDATE chain SET acked_through = acked_through WHERE id = 1")
            conn.execute("INSERT INTO outbox (seq, wire, created_ms, sent_count) "
                         "VALUES (?, zeroblob(200), 0, 0)", (-len(times) - 1,))
        times.append((time.perf_counter() - t) * 1000)
    box.close()
    return statistics.median(times)


LEAN_KEY = bytes.fromhex("FFFFFFFFFFFF")
LEAN_MAC_KEY = b"lean-prototype-mac-key"


def lean_tap(link, outbox: Outbox, identity, now_ms: int) -> None:
    """The lean prototype's tap, as the baseline: the least a tap can do on this machine.

    One sector read with key A (a counter and a visit count, HMAC-checked), the new
    values written into another sector, an Ed25519-signed record, one durable commit.
    No second copy, no intent, no header, no diversified keys: it is not crash-safe, and
    it is not meant to be; it shows what the reader round trips and the disk cost here.
    """
    uid = bytes(link.uid())
    link.authenticate(4, KeyType.A, LEAN_KEY)
    data = b"".join(bytes(link.read_block(b)) for b in (4, 5, 6))
    counter, visits = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
    tag = hmac.new(LEAN_MAC_KEY, uid + data[:32], hashlib.sha256).digest()[:16]
    if any(data[32:]) and data[32:] != tag:
        raise SystemExit("lean baseline: the card's HMAC does not verify")
    visits = visits - 1 if counter else 1000
    new = (counter + 1).to_bytes(4, "big") + visits.to_bytes(4, "big") + bytes(24)
    link.authenticate(8, KeyType.A, LEAN_KEY)
    for i, block in enumerate((new[:16], new[16:], hmac.new(
            LEAN_MAC_KEY, uid + new, hashlib.sha256).digest()[:16])):
        link.write_block(8 + i, block)
    outbox.append(TransactionRecord(
        device_id=identity.device_id, seq=1, prev_hash=bytes(32), device_time_ms=now_ms,
        card_id=uid.hex(), operation=Operation.TAKE_VISIT, store=identity.store,
        product="swim", visits_before=visits + 1, visits_after=visits,
        card_counter=counter + 1), identity.signing_key)


def run_lean(path, taps: int, rng: random.Random, workdir: Path) -> dict:
    """The lean prototype's taps on a factory-fresh card, paced like the real ones."""
    identity = load_or_create(workdir / f"secrets-lean-{path.label}", "gate-lean", "store-01")
    outbox = Outbox(workdir / f"lean-{path.label}.db")
    path.field.load(MifareClassic1K.blank(bytes.fromhex("1EA40001")))
    tap_ms, commands = [], []
    for i in range(taps + 2):
        served = _served(path)
        link = path.tap(None)
        lean_tap(link, outbox, identity, T0 + i)
        done = time.perf_counter()
        used = _served(path) - served
        path.take_away()
        if i >= 2:
            tap_ms.append((done - path.last_event_at) * 1000)
            commands.append(used)
        time.sleep(rng.uniform(0.1, 0.5))
    return {"lean_p50_ms": round(pct(tap_ms, 50), 3), "lean_p99_ms": round(pct(tap_ms, 99), 3),
            "lean_commands_per_tap": statistics.median(commands)}


def run_path(path, taps: int, rng: random.Random, workdir: Path) -> dict:
    name = path.label
    tick = iter(range(1, 10**6))
    (workdir / name).mkdir(exist_ok=True)
    tx = make_runner(workdir / name, clock=lambda: T0 / 1000 + next(tick) * 3600)  # an hour apart
    outbox = tx.outbox
    card = member_card()
    path.field.load(card)
    tap_ms: list[float] = []
    done_ms: list[float] = []
    rtt_ms: list[float] = []
    commands: list[int] = []
    key_a = KEYS.key_a(card.uid, 1)
    for i in range(taps + 2):  # two warm-up taps, not counted
        served = _served(path)
        link = path.tap(card)
        result = tx.run(link, take_visit, serve=True)
        opens = time.perf_counter()
        if not result.ok:
            raise SystemExit(f"{name}: tap {i} refused: {result.reason}")
        tx.served(result)  # the gate opened: mark it, then write the card's second copy
        done = time.perf_counter()
        used = _served(path) - served
        link.authenticate(4, KeyType.A, key_a)
        t = time.perf_counter()
        link.read_block(4)
        rtt = time.perf_counter() - t
        path.take_away()
        if i >= 2:
            tap_ms.append((opens - path.last_event_at) * 1000)
            done_ms.append((done - path.last_event_at) * 1000)
            rtt_ms.append(rtt * 1000)
            commands.append(used)
        time.sleep(rng.uniform(0.1, 0.5))
    assert not tx.journal.unresolved(), "every tap must end settled"
    return {
        "path": path.name, "reader": path.reader, "taps": taps,
        "p50_ms": round(pct(tap_ms, 50), 3), "p95_ms": round(pct(tap_ms, 95), 3),
        "p99_ms": round(pct(tap_ms, 99), 3), "max_ms": round(max(tap_ms), 3),
        "done_p99_ms": round(pct(done_ms, 99), 3),
        "apdu_roundtrip_ms": round(statistics.median(rtt_ms), 3),
        "apdu_roundtrip_p99_ms": round(pct(rtt_ms, 99), 3),
        "card_commands_per_tap": statistics.median(commands),
        "commit_p50_ms": round(commit_baseline(workdir / f"baseline-{name}.db", rng), 3),
        "records": outbox.last_seq,
    }


def _served(path) -> int:
    return path.field.served


@contextlib.contextmanager
def reader_in_its_own_process(kind: str, multi_block: bool = True):
    """Start the simulated reader in a child process; yields (field, where to reach it)."""
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(
        target=_reader_process, args=(theirs, kind, multi_block), daemon=True)
    proc.start()
    try:
        yield RemoteField(ours), ours.recv()
    finally:
        ours.send(("stop",))
        ours.recv()
        proc.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--taps", type=int, default=100)
    parser.add_argument("--path", choices=["pcsc", "pcsc-acr122u", "pn532", "all"], default="all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-lean", action="store_true",
                        help="skip the lean-prototype baseline taps")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="onecard-tapbench-") as tmp:
        work = Path(tmp)
        for label, multi_block in (("pcsc", True), ("pcsc-acr122u", False)):
            if args.path not in (label, "all"):
                continue
            # the machine-wide vpcd lock: a test run on this machine waits, never shares readers
            with vpcd_lock(), running_pcscd(), \
                    reader_in_its_own_process("pcsc", multi_block) as (field, name):
                path = PcscPath(SimpleNamespace(field=field, name=name))
                path.label, path.reader = label, "ACR1252U-class" if multi_block else "ACR122U-class"
                try:
                    results.append(run_path(path, args.taps, rng, work))
                    if not args.no_lean:
                        results[-1].update(run_lean(path, args.taps, rng, work))
                finally:
                    path.close()
        if args.path in ("pn532", "all"):
            with reader_in_its_own_process("pn532") as (field, link_path):
                path = Pn532Path(SimpleNamespace(field=field, link_path=link_path))
                path.label, path.reader = "pn532", "PN532 HSU"
                try:
                    results.append(run_path(path, args.taps, rng, work))
                    if not args.no_lean:
                        results[-1].update(run_lean(path, args.taps, rng, work))
                finally:
                    path.close()
    print(f"{'path':<6} {'reader':<15} {'taps':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'done p99':>8} {'cmds':>4} | {'cmd rtt':>7} {'commit':>6} "
          f"{'lean p50':>8} {'lean p99':>8} {'cmds':>4}")
    for r in results:
        print(f"{r['path']:<6} {r['reader']:<15} {r['taps']:>5} {r['p50_ms']:>7} {r['p95_ms']:>7} "
              f"{r['p99_ms']:>7} {r['max_ms']:>7} {r['done_p99_ms']:>8} "
              f"{r['card_commands_per_tap']:>4} | {r['apdu_roundtrip_ms']:>7} "
              f"{r['commit_p50_ms']:>6} {r.get('lean_p50_ms', '-'):>8} "
              f"{r.get('lean_p99_ms', '-'):>8} {r.get('lean_commands_per_tap', '-'):>4}")
    for r in results:
        print(json.dumps(r, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
