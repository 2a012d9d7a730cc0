"""Tap latency through the real reader stacks: pcscd + vpcd, and a PN532 on a pty.

For each tap: a member card (OneCard format, a year pass) is put on the simulated reader;
the clock starts when the terminal's driver reports the card (pcscd's status change /
the PN532's InListPassiveTarget answer) and stops when the gate has read the card,
decided, written both state copies, signed the record and committed it durably to the
outbox (SQLite WAL, synchronous=FULL). The card is then taken away and, as at a real
gate, the next member comes after an idle gap of 0.1-0.5 s: back-to-back loops run 3-5x
faster than real taps and mislead.

The baseline, in the same run: the bare round trip of one card command (a 16-byte block
read) right after each tap.

    python bench/tap_latency.py --taps 100 [--path pcsc|pn532|both] [--seed 1]

Prints a table, then one JSON line per path with path, taps, p50_ms, p95_ms, p99_ms,
apdu_roundtrip_ms, card_commands_per_tap.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.card_ops import issue, open_account, sell_pass  # noqa: E402
from protocol.mifare import KeyType  # noqa: E402
from simulators.card_field import CardField  # noqa: E402
from simulators.mifare_classic import MifareClassic1K  # noqa: E402
from simulators.pn532_emulator import Pn532Emulator  # noqa: E402
from simulators.vpcd_reader import VpcdReader  # noqa: E402
from terminal_fw.card_app import CardService, WriteStatus  # noqa: E402
from terminal_fw.gate import Gate  # noqa: E402
from terminal_fw.identity import load_or_create  # noqa: E402
from terminal_fw.outbox import Outbox  # noqa: E402
from tests.card_world import CATALOGUE, KEYS, T0, ctx  # noqa: E402
from tests.pcsc_fixtures import running_pcscd  # noqa: E402
from tests.reader_paths import PcscPath, Pn532Path  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def member_card() -> MifareClassic1K:
    card = MifareClassic1K.blank(bytes.fromhex("B3A1C0DE"))
    svc = CardService(KEYS, CATALOGUE)
    for op, args in ((issue, {"card_id": "M09999", "card_product": "gold"}),
                     (open_account, {}), (sell_pass, {})):
        if op is open_account:
            r = svc.run(card, op, 100_000, ctx=ctx())
        elif op is sell_pass:
            r = svc.run(card, op, "year", ctx=ctx())  # paid at the counter
        else:
            r = svc.run(card, op, ctx=ctx(), **args)
        assert r.status is WriteStatus.WRITTEN, (op, r)
    card.enter_field()
    return card


def run_path(path, taps: int, rng: random.Random, workdir: Path) -> dict:
    identity = load_or_create(workdir / f"secrets-{path.name}", f"gate-{path.name}", "store-01")
    outbox = Outbox(workdir / f"outbox-{path.name}.db")
    tick = iter(range(1, 10**6))
    gate = Gate(identity, outbox, "swim", card_service=CardService(KEYS, CATALOGUE),
                clock=lambda: T0 / 1000 + next(tick) * 3600)  # an hour apart: no anti-passback
    card = member_card()
    tap_ms: list[float] = []
    rtt_ms: list[float] = []
    commands: list[int] = []
    key_a = KEYS.key_a(card.uid, 1)
    for i in range(taps + 2):  # two warm-up taps, not counted
        served = _served(path)
        link = path.tap(card)
        decision = gate.tap(link)
        done = time.perf_counter()
        if not decision.opened:
            raise SystemExit(f"{path.name}: tap {i} refused: {decision.reason}")
        used = _served(path) - served
        link.authenticate(4, KeyType.A, key_a)
        t = time.perf_counter()
        link.read_block(4)
        rtt = time.perf_counter() - t
        path.take_away()
        if i >= 2:
            tap_ms.append((done - path.last_event_at) * 1000)
            rtt_ms.append(rtt * 1000)
            commands.append(used)
        time.sleep(rng.uniform(0.1, 0.5))
    return {
        "path": path.name, "taps": taps,
        "p50_ms": round(pct(tap_ms, 50), 3), "p95_ms": round(pct(tap_ms, 95), 3),
        "p99_ms": round(pct(tap_ms, 99), 3), "max_ms": round(max(tap_ms), 3),
        "apdu_roundtrip_ms": round(statistics.median(rtt_ms), 3),
        "apdu_roundtrip_p99_ms": round(pct(rtt_ms, 99), 3),
        "card_commands_per_tap": statistics.median(commands),
        "records": outbox.last_seq,
    }


def _served(path) -> int:
    if path.name == "pcsc":
        return path.vreader.apdus_served
    return path.emulator.commands_served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--taps", type=int, default=100)
    parser.add_argument("--path", choices=["pcsc", "pn532", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="onecard-tapbench-") as tmp:
        work = Path(tmp)
        if args.path in ("pcsc", "both"):
            with running_pcscd():
                vreader = VpcdReader(CardField("bench"), port=35963)
                vreader.start()
                path = PcscPath(vreader)
                try:
                    results.append(run_path(path, args.taps, rng, work))
                finally:
                    path.close()
                    vreader.stop()
        if args.path in ("pn532", "both"):
            emulator = Pn532Emulator(CardField("bench")).start()
            path = Pn532Path(emulator)
            try:
                results.append(run_path(path, args.taps, rng, work))
            finally:
                path.close()
                emulator.stop()
    print(f"{'path':<6} {'taps':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'cmd rtt ms':>10} {'cmds/tap':>8}")
    for r in results:
        print(f"{r['path']:<6} {r['taps']:>5} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8} {r['apdu_roundtrip_ms']:>10} {r['card_commands_per_tap']:>8}")
    for r in results:
        print(json.dumps(r, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
