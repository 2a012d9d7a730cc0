"""The gate's I/O board for terminal tests: the real firmware in MicroPython on a pty
(:class:`simulators.ioboard.BoardRig`) and the terminal's driver on the other end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from terminal_fw.ioboard import IoBoard
from terminal_fw.passage import PassageReport

WAIT = 15.0  # generous: other test runs share the two cores


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class Driver:
    """An IoBoard driver on the rig's port that keeps what it was told."""

    def __init__(self, port: str, **kw: Any) -> None:
        self.late: list[PassageReport] = []
        self.events: list[tuple[str, dict]] = []
        kw.setdefault("heartbeat_s", 0.3)
        kw.setdefault("admit_timeout", 1.5)
        self.board = IoBoard(port, on_report=self.late.append,
                             on_event=lambda name, data: self.events.append((name, data)), **kw)

    def open_in_background(self, ref: str, timeout: float | None = None) -> list[PassageReport]:
        """pass_one on its own thread (the gate role does the same); the report lands in
        the returned list."""
        result: list[PassageReport] = []
        thread = threading.Thread(target=lambda: result.append(self.board.pass_one(ref, timeout)),
                                  daemon=True)
        thread.start()
        return result

    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]

    def close(self) -> None:
        self.board.close()
