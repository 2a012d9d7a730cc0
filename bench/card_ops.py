"""How long our card work takes, without a reader: figures printed, nothing asserted.

Run: .venv/bin/python -m bench.card_ops

Prints per-operation times (median of many) for: the pure visit decision, decoding the
application from its blocks (3 AES-CMACs), and a whole gate visit through the in-process
MIFARE Classic chip model (3 sector reads with key A, 2 sector writes with key B:
5 authentications, 9 reads, 6 writes). The chip model costs nothing like a real card;
multiply the command count by the reader's round trip (PC/SC ~0.03 ms via vpcd, 5-10 ms
for a real ACR122U) for a field figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from protocol.card_format import decode_application, image_blocks, uid_of_image
from protocol.card_ops import take_visit
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.card_memory import CardMemory
from tests.card_tx import personalise
from tests.card_world import CATALOGUE, KEYS, T0, UID, ctx


class CountingLink:
    """Counts the card commands a visit needs."""

    def __init__(self, card: MifareClassic1K) -> None:
        self.card = card
        self.commands = 0

    def __getattr__(self, name: str):
        attr = getattr(self.card, name)
        if name in ("authenticate", "read_block", "write_block", "uid"):
            def counted(*args):
                self.commands += 1
                return attr(*args)
            return counted
        return attr


def timed(label: str, fn: Callable[[int], object], n: int) -> None:
    samples = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    print(f"{label:<48} median {statistics.median(samples):8.1f} µs   p99 {samples[int(n * 0.99)]:8.1f} µs")


def main() -> None:
    card = MifareClassic1K.blank(UID)
    personalise(card, visits=(("swim", 1000),))
    image = card.to_mfd()
    read = decode_application(image_blocks(image), uid_of_image(image), KEYS, CATALOGUE)
    state = read.state
    timed("take_visit decision (pure)", lambda i: take_visit(
        state, catalogue=CATALOGUE, ctx=ctx(T0 + i * 3_600_000)), 5000)
    timed("decode application (3 CMACs)", lambda i: decode_application(
        image_blocks(image), UID, KEYS, CATALOGUE), 5000)
    link = CountingLink(card)

    def visit(i: int) -> None:  # the card's part of a tap: read, decide, write
        memory = CardMemory(link, KEYS, CATALOGUE)
        read = memory.read(for_write=True)
        done = take_visit(read.state, catalogue=CATALOGUE, ctx=ctx(T0 + i * 3_600_000))
        memory.write(read, done.state)  # type: ignore[union-attr]

    timed("gate visit through the chip model", visit, 2000)
    print(f"card commands per visit: {link.commands / 2000:.0f} "
          f"(authenticate, read, write; UID once)")


if __name__ == "__main__":
    main()
