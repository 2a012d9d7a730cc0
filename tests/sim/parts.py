"""The simulated parts the deterministic simulator puts behind the real code.

* :class:`SimDisk` and :class:`SimOutbox` — the terminal's SQLite file on a disk that
  keeps only what was fsynced: the real :class:`~terminal_fw.outbox.Outbox` on an
  in-memory database whose image is copied to the "disk" at each durable commit (a
  ``synchronous=FULL`` commit, or an autocommitted statement). A power cut throws the
  memory away; the terminal boots from the last image. A full disk fails the commit of
  any transaction that wrote, as SQLite does, and rolls it back.
* :class:`Power` — a terminal's power: every disk and card operation of a terminal
  whose power is off raises :class:`PowerCut`.
* :class:`SimWriter` — the tap runner's writer "thread", scheduled by the simulator:
  a submitted write runs when the runner waits for it or when the schedule lets it run
  between two card commands, so both interleavings of the real runner are explored
  and every run of a seed takes the same one.
* :class:`SimLink` — the card on a terminal's reader: the terminal's power and the
  writer's interleaving at each card command.

Product code never imports this package (tests/test_architecture.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from random import Random
from typing import Any

from terminal_fw.outbox import Outbox


class PowerCut(BaseException):  # noqa: N818 - an event, not an error a caller handles
    """The terminal's power went: nothing after this point happens on it.

    A BaseException so that no ``except Exception`` of the product swallows it (it
    unwinds like a process that was killed; SQLite rolls back what was not committed).
    """


class HqCrash(BaseException):  # noqa: N818
    """HQ's process died: the database transaction in progress is not committed."""


class Power:
    """One terminal's power switch."""

    def __init__(self) -> None:
        self.on = True

    def check(self) -> None:
        if not self.on:
            raise PowerCut("the terminal has no power")


class SimDisk:
    """What the terminal's storage holds across power cuts: the last fsynced image."""

    def __init__(self, image: bytes | None = None) -> None:
        self.image = image
        self.full = False
        self.syncs = 0


_READS = ("SELECT", "PRAGMA")


class SimOutbox(Outbox):
    """The real outbox (and the intent journal in its file) on a :class:`SimDisk`."""

    def __init__(self, disk: SimDisk, power: Power) -> None:
        super().__init__(":memory:")
        self.disk = disk
        self.power = power
        if disk.image is not None:
            self.db.conn.deserialize(disk.image)
        else:
            self._sync()

    def _sync(self) -> None:
        self.power.check()
        self.disk.image = self.db.conn.serialize()
        self.disk.syncs += 1

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        self.power.check()
        with super().transaction(durable=durable) as conn:
            before = conn.total_changes
            yield conn
            self.power.check()  # a cut before the commit: SQLite rolls it back
            if self.disk.full and conn.total_changes != before:
                raise sqlite3.OperationalError("database or disk is full")
        if durable:
            self._sync()

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        self.power.check()
        write = not sql.lstrip().upper().startswith(_READS)
        conn = self.db.conn
        if write and self.disk.full and not conn.in_transaction:
            # Only a statement that changes the file fails on a full disk.
            version = conn.execute("PRAGMA schema_version").fetchone()[0]
            changes = conn.total_changes
            conn.execute("BEGIN")
            cur = super().execute(sql, params)
            if conn.total_changes != changes or \
                    conn.execute("PRAGMA schema_version").fetchone()[0] != version:
                conn.execute("ROLLBACK")
                raise sqlite3.OperationalError("database or disk is full")
            conn.execute("COMMIT")
            return cur
        cur = super().execute(sql, params)
        if write and not self.db.conn.in_transaction:
            self._sync()  # an autocommitted statement under synchronous=FULL
        return cur


class _LazyFuture:
    """A :class:`concurrent.futures.Future` look-alike whose work runs when asked."""

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self._call = (fn, args, kwargs)
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        if self._done:
            return
        self._done = True
        fn, args, kwargs = self._call
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits, as a thread would
            self._error = exc

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> Any:
        self.run()
        if self._error is not None:
            raise self._error
        return self._value


class SimWriter:
    """The runner's writer thread, run by the simulator's schedule (an Executor)."""

    def __init__(self, rng: Random, power: Power) -> None:
        self.rng = rng
        self.power = power
        self.pending: list[_LazyFuture] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _LazyFuture:
        future = _LazyFuture(fn, args, kwargs)
        self.pending.append(future)
        return future

    def maybe_run(self) -> None:
        """Between two card commands: the writer thread may get its turn."""
        self.pending = [f for f in self.pending if not f.done()]
        if self.pending and self.power.on and self.rng.random() < 0.5:
            self.pending.pop(0).run()

    def shutdown(self, wait: bool = True, **_: Any) -> None:
        self.pending.clear()


class SimLink:
    """A card on a terminal's reader: each command needs the terminal's power, and the
    writer thread may run between two of them."""

    def __init__(self, card: Any, power: Power, writer: SimWriter) -> None:
        self.card = card
        self.power = power
        self.writer = writer

    def uid(self) -> bytes:
        self.power.check()
        return bytes(self.card.uid())

    def authenticate(self, block: int, key_type: Any, key: bytes) -> None:
        self.power.check()
        self.card.authenticate(block, key_type, key)

    def read_block(self, block: int) -> bytes:
        self.power.check()
        return self.card.read_block(block)

    def write_block(self, block: int, data: bytes) -> None:
        self.power.check()
        self.writer.maybe_run()
        self.power.check()
        self.card.write_block(block, data)
